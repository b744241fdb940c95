//! Placeholder: filled in on its own branch.

use super::{ProtocolError, Reply};

pub fn decode(_buf: &mut Vec<u8>, _max_value: usize) -> Result<Option<Reply>, ProtocolError> {
    Err(ProtocolError("not written yet".to_owned()))
}
