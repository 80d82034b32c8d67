//! Optional link authentication (`llmdd.LinkSecret` / `llmdd.LinkSecretFile`):
//! a mutual challenge–response with HMAC-SHA256 over both handshake nonces,
//! checked in constant time, before either side discloses anything about
//! itself. It proves that the peer holds the shared secret; it does not
//! encrypt or integrity-protect the traffic that follows (docs/security.md).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::transport::identity::Tag;

/// Shortest secret accepted (bytes): a MAC over known nonces lets an observer
/// test guesses offline, so the secret must not be guessable.
pub const MIN_SECRET_LEN: usize = 16;

/// A shared link secret. Its bytes are never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct LinkKey(Vec<u8>);

impl std::fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkKey(<redacted>)")
    }
}

impl Drop for LinkKey {
    fn drop(&mut self) {
        // Best effort: do not leave the secret in freed memory.
        for b in self.0.iter_mut() {
            // SAFETY: writing a byte we own; volatile so it is not elided.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

impl LinkKey {
    /// A key from secret bytes (at least [`MIN_SECRET_LEN`]).
    pub fn new(secret: &[u8]) -> Option<LinkKey> {
        (secret.len() >= MIN_SECRET_LEN).then(|| LinkKey(secret.to_vec()))
    }

    fn mac(&self, side: &str, client_nonce: &Tag, server_nonce: &Tag) -> Hmac<Sha256> {
        let mut m =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key length");
        m.update(b"llmdd/3 link auth ");
        m.update(side.as_bytes());
        m.update(&[0]);
        m.update(client_nonce);
        m.update(server_nonce);
        m
    }

    /// The server's answer to the client's nonce.
    pub fn server_mac(&self, client_nonce: &Tag, server_nonce: &Tag) -> Tag {
        self.mac("server", client_nonce, server_nonce)
            .finalize()
            .into_bytes()
            .into()
    }

    /// The client's answer to the server's nonce.
    pub fn client_mac(&self, client_nonce: &Tag, server_nonce: &Tag) -> Tag {
        self.mac("client", client_nonce, server_nonce)
            .finalize()
            .into_bytes()
            .into()
    }

    /// Constant-time check of the server's answer.
    pub fn check_server(&self, client_nonce: &Tag, server_nonce: &Tag, tag: &Tag) -> bool {
        self.mac("server", client_nonce, server_nonce)
            .verify_slice(tag)
            .is_ok()
    }

    /// Constant-time check of the client's answer.
    pub fn check_client(&self, client_nonce: &Tag, server_nonce: &Tag, tag: &Tag) -> bool {
        self.mac("client", client_nonce, server_nonce)
            .verify_slice(tag)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_directional_and_keyed() {
        let k = LinkKey::new(b"0123456789abcdef-secret").unwrap();
        let other = LinkKey::new(b"0123456789abcdef-other!").unwrap();
        let (c, s) = ([1u8; 32], [2u8; 32]);
        let sm = k.server_mac(&c, &s);
        assert!(k.check_server(&c, &s, &sm));
        // A server answer is no client answer (no reflection), and nonces bind it.
        assert!(!k.check_client(&c, &s, &sm));
        assert!(!k.check_server(&s, &c, &sm));
        assert!(!other.check_server(&c, &s, &sm));
        assert!(k.check_client(&c, &s, &k.client_mac(&c, &s)));
        assert!(LinkKey::new(b"short").is_none());
        assert_eq!(format!("{k:?}"), "LinkKey(<redacted>)");
    }
}
