//! Fuzzes the wire frame decoder with arbitrary bytes: as one whole frame, and
//! as a header followed by any payload. Decoding must never panic; a frame that
//! decodes must encode back to a frame that decodes to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmdd::testing::wire::{self, HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    if let Ok((header, msg)) = wire::decode_frame(data) {
        assert!(wire::frame_len(&header) == data.len());
        let again = wire::encode_to_vec(&msg, header.tag);
        let (h2, m2) = wire::decode_frame(&again).expect("a re-encoded frame decodes");
        assert_eq!(m2, msg);
        assert_eq!(h2.tag, header.tag);
        let _ = wire::bulk_len(&msg);
    }
    if let Some((head, rest)) = data.split_first_chunk::<HEADER_LEN>() {
        if let Ok(header) = wire::decode_header(head) {
            let _ = wire::decode_payload(&header, rest);
        }
    }
});
