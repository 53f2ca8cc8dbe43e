//! (being written) Safe unpacking of one layer into a snapshot directory.

#[derive(Debug, Default)]
pub struct UnpackLimits {
    pub max_expanded_bytes: u64,
}
