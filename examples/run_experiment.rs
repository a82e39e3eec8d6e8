//! Run an experiment file from Rust, as `lantern run` does, and list what each stage did.
//!
//! `cargo run --release --example run_experiment -- experiments/quickstart.toml [OUT]`

use anyhow::{Context, Result};
use lantern::exec::{Options, Quiet, Session};
use lantern::util::Cancel;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let file = args.next().context("usage: run_experiment FILE [OUT]")?;
    let out = args.next().unwrap_or_else(|| "outputs".into());
    // Parse, validate, plan and fingerprint; an invalid file prints its diagnostics.
    let mut session = Session::open(file.as_ref(), out.as_ref())?;
    for &ix in &session.plan().order {
        println!("{:<24} {}", session.plan().graph[ix].name, session.state(ix));
    }
    let outcome = session.run(&Options::default(), &Cancel::new(), candle_core::Device::Cpu, &Quiet)?;
    for n in &outcome.nodes {
        println!("{:<24} {:?} in {:.1}s", n.name, n.status, n.seconds);
    }
    lantern::report::write_for(&session.v, &outcome, &session.store.dirs)?;
    Ok(())
}
