//! lfeval: an evaluation harness for custom LLM integrations.

pub mod diagnostic;
pub mod variables;
pub mod yaml;
