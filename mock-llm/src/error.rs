//! Errors of the mock crate: reading its configuration and binding its socket.

/// What can go wrong setting up a script or the mock server.
#[derive(Debug, thiserror::Error)]
pub enum MockError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A configuration or rules file is not valid TOML of the expected shape.
    #[error("{origin}: {message}")]
    Parse {
        /// The file (or `"<string>"`).
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// The server could not listen on its address.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}
