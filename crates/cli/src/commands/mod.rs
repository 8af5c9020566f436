//! One module per subcommand.

pub mod cat;
pub mod init;
pub mod key;
