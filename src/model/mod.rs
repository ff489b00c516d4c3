//! The `model` stage: the validated project normalized into the desired state.

pub mod demand;
pub mod mac;
