//! `lantern plan --cost`: the plan with each stage's operations, peak memory and time at this
//! machine's measured matmul rate, the total, and how to split a stage longer than a day.

use super::{open, Exit, Target};
use anyhow::Result;
use lantern::exec::cost::{Costs, DAY};
use lantern::plan::NodeKind;

/// 2.7 TFLOP, 310 GFLOP, …
fn flops(f: f64) -> String {
    let units = [(1e18, "EFLOP"), (1e15, "PFLOP"), (1e12, "TFLOP"), (1e9, "GFLOP"), (1e6, "MFLOP")];
    match units.iter().find(|u| f >= u.0) {
        Some((d, u)) => format!("{:.1} {u}", f / d),
        None if f > 0.0 => "< 1 MFLOP".into(),
        None => "-".into(),
    }
}

fn bytes(b: f64) -> String {
    match b {
        b if b >= 1e9 => format!("{:.1} GB", b / 1e9),
        b if b > 0.0 => format!("{:.0} MB", (b / 1e6).max(1.0)),
        _ => "-".into(),
    }
}

/// 0.4 s, 40 s, 12 min, 3.1 h, 2.5 days (tenths under 10 s, to set beside measured stages).
fn duration(s: f64) -> String {
    match s {
        s if s >= DAY => format!("{:.1} days", s / DAY),
        s if s >= 3600.0 => format!("{:.1} h", s / 3600.0),
        s if s >= 60.0 => format!("{:.0} min", s / 60.0),
        s if s >= 10.0 => format!("{s:.0} s"),
        s if s >= 0.05 => format!("{s:.1} s"),
        s if s > 0.0 => "< 0.1 s".into(),
        _ => "-".into(),
    }
}

pub fn plan_cost(target: &Target) -> Result<Exit> {
    let Some(session) = open(target)? else { return Ok(Exit::Invalid) };
    let costs: Costs = session.costs()?;
    let r = &costs.rates;
    println!(
        "this machine ({} threads, {}): f32 matmul {:.1} GFLOP/s, token statistics {:.0} M logits/s, neuron \
         statistics {:.0} M values/s",
        rayon::current_num_threads(),
        if costs.measured_now { "measured now" } else { "measured before, in .lantern/machine.json" },
        r.matmul / 1e9,
        r.logits / 1e6,
        r.values / 1e6
    );
    println!("{:<4} {:<24} {:<22} {:>12} {:>9} {:>18}  state", "#", "stage", "kind", "work", "memory", "time");
    let plan = session.plan();
    // A stage's parts (shards, seeds) are summed into its line: (seconds, flops, bytes, parts).
    let mut parts: std::collections::BTreeMap<String, (f64, f64, f64, usize, bool)> = Default::default();
    let mut stages: Vec<(String, f64, usize, bool)> = Vec::new();
    let mut line = 0;
    for n in &costs.nodes {
        let node = &plan.graph[n.ix];
        if let NodeKind::Part { stage, .. } = &node.kind {
            let e = parts.entry(stage.clone()).or_default();
            (e.0, e.1, e.2, e.3, e.4) =
                (e.0 + n.seconds, e.1 + n.cost.flops, e.2.max(n.cost.bytes), e.3 + 1, n.counted);
            continue;
        }
        let (seconds, work, memory, count, counted) = match parts.get(&node.name) {
            Some(&(s, f, b, k, c)) if matches!(node.kind, NodeKind::Stage(_)) => (s, f, b, k, c),
            _ => (n.seconds, n.cost.flops, n.cost.bytes, 0, n.counted),
        };
        let time = match count {
            0 => duration(seconds),
            k => format!("{k} × {}", duration(seconds / k as f64)),
        };
        let estimated = if seconds > 0.0 && !counted { "~" } else { "" };
        let state = session.state(n.ix);
        line += 1;
        println!(
            "{line:<4} {:<24} {:<22} {:>12} {:>9} {time:>18}  {}",
            node.name,
            node.kind_name,
            format!("{estimated}{}", flops(work)),
            bytes(memory),
            state.split(" (").next().unwrap_or(&state)
        );
        if let NodeKind::Stage(name) = &node.kind {
            stages.push((name.clone(), seconds, count, n.cost.shardable));
        }
    }
    let (f, b, s) = costs.total();
    println!("total: {} of work, {} at the peak, {} at the measured rate", flops(f), bytes(b), duration(s));
    if costs.nodes.iter().any(|n| n.cost.is_work() && !n.counted) {
        println!("~ token counts estimated from the datasets' options and file sizes (counted once tokenized)");
    }
    for (name, seconds, parts, shardable) in stages {
        let each = seconds / parts.max(1) as f64;
        // `--set` names the entry as written, before a matrix expands it.
        let written = session
            .v
            .exp
            .matrices
            .expanded
            .iter()
            .find(|((section, _), names)| section == "stages" && names.contains(&name))
            .map_or(name.as_str(), |((_, base), _)| base.as_str());
        if each <= DAY && seconds > DAY {
            println!(
                "{name}: {} in {parts} shards of {} — run them as separate jobs: `lantern run FILE --shard i/{parts}` for \
                 i = 1…{parts} (e.g. a Slurm array) sharing --out, then a plain run to merge",
                duration(seconds),
                duration(each)
            );
        } else if each > DAY && shardable {
            let shards = Costs::shards_for(seconds);
            println!(
                "{name}: {} — split it: --set stages.{written}.shards={shards}, then `lantern run FILE --shard i/{shards}` \
                 for i = 1…{shards} as separate jobs (e.g. a Slurm array) sharing --out, and a plain run to merge",
                duration(seconds)
            );
        } else if each > DAY {
            println!(
                "{name}: {} — this stage cannot be sharded: lower the tokens it reads (its dataset's n_tokens or \
                 max_docs) or run it on a GPU (`device = \"cuda\"`)",
                duration(seconds)
            );
        }
    }
    Ok(Exit::Ok)
}
