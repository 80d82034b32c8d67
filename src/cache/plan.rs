//! Address arithmetic (spec §4.3–§4.5): turns one transfer call into segments.
