//! The `lantern` command line.
fn main() {}
