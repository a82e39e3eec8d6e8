//! The `lantern` command line: a thin layer over the library (clap).

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

mod cli;

#[derive(Parser)]
#[command(name = "lantern", version, about = "Mechanistic interpretability experiments from TOML files")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// An experiment file, with overrides.
#[derive(clap::Args)]
struct Experiment {
    file: PathBuf,
    /// Override a value of the file: `--set datasets.pile.n_tokens=20000`,
    /// `--set stages.acts.hooks='["post.3"]'` (a TOML value; a bare word is a string). Repeatable.
    #[arg(long = "set", value_name = "PATH=VALUE")]
    set: Vec<String>,
}

impl Experiment {
    fn target(&self, out: &std::path::Path) -> cli::Target {
        cli::Target { file: self.file.clone(), sets: self.set.clone(), out: out.to_path_buf() }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Executor {
    Local,
    Slurm,
}

/// The resources of Slurm jobs (over the file's `[slurm]`, under its `[slurm.stages.NAME]`).
#[derive(clap::Args)]
struct SlurmArgs {
    /// sbatch --partition.
    #[arg(long, help_heading = "Slurm")]
    partition: Option<String>,
    /// sbatch --time (`30`, `4:00:00`, `1-00`).
    #[arg(long, help_heading = "Slurm")]
    time: Option<String>,
    /// sbatch --mem (`16G`).
    #[arg(long, help_heading = "Slurm")]
    mem: Option<String>,
    /// sbatch --cpus-per-task.
    #[arg(long, help_heading = "Slurm")]
    cpus_per_task: Option<u32>,
    /// sbatch --account.
    #[arg(long, help_heading = "Slurm")]
    account: Option<String>,
    /// A further sbatch option, as it is (`--sbatch-arg=--gres=gpu:1`; repeatable).
    #[arg(long, help_heading = "Slurm", allow_hyphen_values = true)]
    sbatch_arg: Vec<String>,
}

impl SlurmArgs {
    fn resources(self) -> lantern::experiment::slurm::Resources {
        let SlurmArgs { partition, time, mem, cpus_per_task, account, sbatch_arg } = self;
        lantern::experiment::slurm::Resources { partition, time, mem, cpus_per_task, account, sbatch_args: sbatch_arg }
    }

    fn any(&self) -> bool {
        let SlurmArgs { partition, time, mem, cpus_per_task, account, sbatch_arg } = self;
        partition.is_some()
            || time.is_some()
            || mem.is_some()
            || cpus_per_task.is_some()
            || account.is_some()
            || !sbatch_arg.is_empty()
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run an experiment: stages in dependency order, cached and resumable.
    Run {
        #[command(flatten)]
        exp: Experiment,
        /// Output folder (default: outputs/ in the working directory).
        #[arg(long, default_value = "outputs")]
        out: PathBuf,
        /// Recompute a stage even if cached (repeatable).
        #[arg(long)]
        force: Vec<String>,
        /// Run only this stage and what it needs (repeatable).
        #[arg(long)]
        only: Vec<String>,
        /// Compute only shard i of n of the stages split into n shards (e.g. a Slurm array task:
        /// `--shard $((SLURM_ARRAY_TASK_ID+1))/$SLURM_ARRAY_TASK_COUNT`); a plain run then merges.
        #[arg(long, value_parser = cli::parse_shard)]
        shard: Option<(usize, usize)>,
        /// Show what would run, run nothing (with `--executor slurm`: the sbatch command lines).
        #[arg(long)]
        dry_run: bool,
        /// Where the stages run: in this process, or submitted as Slurm jobs (then it prints the
        /// job ids and returns; `lantern status FILE` follows them).
        #[arg(long, value_enum, default_value_t = Executor::Local)]
        executor: Executor,
        #[command(flatten)]
        slurm: SlurmArgs,
    },
    /// Check an experiment file; exit 2 when invalid.
    Validate {
        #[command(flatten)]
        exp: Experiment,
    },
    /// Show the stages in run order with their state (cached / stale and why / to run).
    Plan {
        #[command(flatten)]
        exp: Experiment,
        #[arg(long, default_value = "outputs")]
        out: PathBuf,
        /// Print the graph as Graphviz.
        #[arg(long)]
        dot: bool,
        /// Estimate each stage's work (FLOPs), peak memory and time at this machine's measured
        /// matmul rate, and the total; say how to shard a stage longer than a day.
        #[arg(long, conflicts_with = "dot")]
        cost: bool,
    },
    /// What the output folder holds for an experiment (each stage's state, when it ran, its size),
    /// or, without a file, for every experiment under the output folder.
    Status {
        file: Option<PathBuf>,
        #[arg(long = "set", value_name = "PATH=VALUE")]
        set: Vec<String>,
        #[arg(long, default_value = "outputs")]
        out: PathBuf,
    },
    /// Print a table of a stage in the terminal (or as CSV).
    Show {
        #[command(flatten)]
        exp: Experiment,
        /// `STAGE` (its only table) or `STAGE.TABLE`.
        table: String,
        #[arg(long, default_value = "outputs")]
        out: PathBuf,
        /// Sort by this column (ascending unless --desc).
        #[arg(long)]
        sort: Option<String>,
        #[arg(long)]
        desc: bool,
        /// Only the first N rows (default 20; 0 = all).
        #[arg(long, default_value_t = 20)]
        head: usize,
        /// Only these columns: `--columns layer,neuron,d`.
        #[arg(long, value_delimiter = ',')]
        columns: Vec<String>,
        /// Write the table as CSV to stdout instead.
        #[arg(long)]
        csv: bool,
    },
    /// Remove an experiment's links and report (its artifacts stay in the store for `gc`).
    Clean {
        #[command(flatten)]
        exp: Experiment,
        #[arg(long, default_value = "outputs")]
        out: PathBuf,
    },
    /// Delete the store entries that no experiment folder links to (asks first).
    Gc {
        #[arg(long, default_value = "outputs")]
        out: PathBuf,
        /// List what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Delete without asking.
        #[arg(long)]
        yes: bool,
    },
    /// Print the JSON Schema of experiment files.
    Schema,
    /// List a model's hook points with their shapes.
    Hooks {
        /// Hub name, TransformerLens alias or model folder.
        model: String,
    },
    /// Run a model on text or tokens and save logits, loss and chosen activations (safetensors).
    Trace {
        /// Hub name, TransformerLens alias or model folder.
        model: String,
        #[arg(long, conflicts_with = "tokens")]
        text: Option<String>,
        /// Token ids: `1,2,3` (rows separated by `;`).
        #[arg(long)]
        tokens: Option<String>,
        /// Hook name globs (`*` = every hook TransformerLens fires by default).
        #[arg(long, num_args = 1..)]
        hooks: Vec<String>,
        #[arg(long, default_value = "default")]
        processing: String,
        /// Do not prepend BOS to --text.
        #[arg(long)]
        no_bos: bool,
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    lantern::util::sys::tune_allocator();
    lantern::util::sys::default_sigpipe();
    let args = Cli::parse();
    let result = match args.command {
        Command::Run { exp, out, force, only, shard, dry_run, executor: Executor::Slurm, slurm } => {
            if !force.is_empty() || shard.is_some() {
                eprintln!(
                    "error: --executor slurm submits what is not computed: --force and --shard are for local runs"
                );
                return cli::Exit::Invalid.into();
            }
            let sets = exp.set.clone();
            let exe = match std::env::current_exe() {
                Ok(exe) => exe,
                Err(e) => {
                    eprintln!("error: cannot find the lantern binary the jobs should run: {e}");
                    return cli::Exit::Failed.into();
                }
            };
            let opts = lantern::exec::cluster::SubmitOptions { only, resources: slurm.resources(), exe, sets, dry_run };
            cli::submit(&exp.target(&out), opts)
        }
        Command::Run { exp, out, force, only, shard, dry_run, executor: Executor::Local, slurm } => {
            if slurm.any() {
                eprintln!("error: --partition, --time, --mem, --cpus-per-task, --account and --sbatch-arg need --executor slurm");
                return cli::Exit::Invalid.into();
            }
            cli::run(&exp.target(&out), lantern::exec::Options { force, only, shard, dry_run, fail_after: None })
        }
        Command::Validate { exp } => cli::validate(&exp.file, &exp.set),
        Command::Plan { exp, out, dot, cost } => cli::plan(&exp.target(&out), dot, cost),
        Command::Status { file: Some(file), set, out } => cli::status(&cli::Target { file, sets: set, out }),
        Command::Status { file: None, out, .. } => cli::status_all(&out),
        Command::Show { exp, table, out, sort, desc, head, columns, csv } => {
            cli::show(&exp.target(&out), &table, &cli::ShowOptions { sort, desc, head, columns, csv })
        }
        Command::Clean { exp, out } => cli::clean(&exp.target(&out)),
        Command::Gc { out, dry_run, yes } => cli::gc(&out, dry_run, yes),
        Command::Schema => {
            print!("{}", lantern::experiment::schema_json());
            Ok(cli::Exit::Ok)
        }
        Command::Hooks { model } => cli::hooks(&model),
        Command::Trace { model, text, tokens, hooks, processing, no_bos, out } => {
            trace(&model, text, tokens, hooks, &processing, !no_bos, &out)
        }
    };
    match result {
        Ok(code) => code.into(),
        Err(e) => {
            eprintln!("error: {e:#}");
            cli::Exit::Failed.into()
        }
    }
}

fn trace(
    model: &str,
    text: Option<String>,
    tokens: Option<String>,
    hooks: Vec<String>,
    processing: &str,
    bos: bool,
    out: &std::path::Path,
) -> Result<cli::Exit> {
    let input = match (text, tokens) {
        (Some(t), None) => cli::TraceInput::Text(t, bos),
        (None, Some(t)) => cli::TraceInput::Tokens(t),
        _ => bail!("give --text TEXT or --tokens 1,2,3"),
    };
    cli::trace(model, &input, &hooks, processing, out).context("trace failed")
}
