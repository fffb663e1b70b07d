//! Reading a built-in tool's call arguments: decoding the JSON object into the tool's own
//! `Args` type, and the [`ToolError::InvalidArguments`] every refusal of them is.

use serde::de::DeserializeOwned;

use crate::error::ToolError;

/// [`ToolError::InvalidArguments`] of the tool `tool` saying `message`.
pub(crate) fn invalid(tool: &str, message: impl Into<String>) -> ToolError {
    ToolError::InvalidArguments {
        tool: tool.to_owned(),
        message: message.into(),
    }
}

/// Decodes the arguments of a call to `tool`; what does not decode is [`invalid`] with the
/// decoder's message.
pub(crate) fn parse<T: DeserializeOwned>(
    tool: &str,
    args: serde_json::Value,
) -> Result<T, ToolError> {
    serde_json::from_value(args).map_err(|err| invalid(tool, err.to_string()))
}
