//! Lines for a person at a terminal (the demo, `pgbaton check`), written so
//! that a stdout nobody reads any more is ignored instead of panicking:
//! `pgbaton demo | tee log` and a Ctrl-C that reaches tee too must still end
//! in an orderly shutdown that removes what the demo made.

use std::io::Write;

/// Writes one line to stdout; a closed or failing stdout is not an error.
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_fmt(args);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

/// Like `println!`, without its panic when stdout is closed.
#[macro_export]
macro_rules! say {
    () => {
        $crate::output::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::output::line(format_args!($($arg)*))
    };
}
