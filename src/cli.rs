//! Command-line arguments (clap derive). Parsing only: commands turn these into settings.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::printer::ColorChoice;

/// Evaluate custom LLM integrations described in AI GO! YAML.
///
/// Exit codes: 0 success, 1 failed checks or samples, 2 usage or configuration error, 130
/// interrupted.
#[derive(Debug, Parser)]
#[command(name = "lfeval", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Project directory (default: the current directory).
    #[arg(short = 'C', long = "project", global = true, value_name = "DIR")]
    pub project: Option<PathBuf>,
    /// Extra `.env` file; its values override the project's `.env`.
    #[arg(long = "env", global = true, value_name = "FILE")]
    pub env_file: Option<PathBuf>,
    /// Virtualenv whose packages snippets may import (default: `$VIRTUAL_ENV`).
    #[arg(long, global = true, value_name = "DIR")]
    pub python_env: Option<PathBuf>,
    /// When to use colours.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List and test models.
    #[command(subcommand)]
    Model(ModelCommand),
    /// List and test model adapters.
    #[command(subcommand)]
    Adapter(AdapterCommand),
    /// Load every model and adapter (or the given files) and report every error.
    Validate(ValidateArgs),
    /// Manage the local secret store used by `<< secrets.NAME >>`.
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Show the embedded Python: version, prefix, `sys.path`, and whether `httpx` imports.
    Doctor,
    /// Run an evaluation described by a run config.
    Run(RunArgs),
    /// Merge the run directories of a sharded run (`run --shard I/N`) into one run directory.
    Merge(MergeArgs),
    /// Write a run's `report.html` again (optionally against a baseline run) and open it.
    Report(ReportArgs),
    /// Compare run B against baseline run A: metric deltas with confidence intervals, McNemar
    /// tests, flipped samples, errors, latency, tokens and cost.
    Compare(CompareArgs),
    /// List and show the runs under the project's `runs/`.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Start a project: a model with its snippet, an adapter, a dataset, a task and `run.yaml`.
    Init(InitArgs),
    /// Print the JSON Schema of an entity kind (for editors), or write every kind's to a folder.
    Schema(SchemaArgs),
    /// Print a shell completion script: `lfeval completions bash > ~/.local/share/bash-completion/completions/lfeval`.
    Completions(CompletionsArgs),
    /// `lf`-style spelling: `lfeval test model KEY`.
    #[command(subcommand, hide = true)]
    Test(TestCommand),
    /// `lf`-style spelling: `lfeval list model`.
    #[command(subcommand, hide = true)]
    List(ListCommand),
    /// Internal: serve one snippet for an `isolation: process` model over stdin/stdout.
    #[command(name = "__worker", hide = true)]
    Worker,
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// List the project's models.
    List(ListArgs),
    /// Push one request through the whole chain and show every step.
    Test(ModelTestArgs),
    /// Add a model to the project: `models/KEY.yaml` and its snippet, calling `--url`.
    New(ModelNewArgs),
}

#[derive(Debug, Subcommand)]
pub enum TestCommand {
    Model(ModelTestArgs),
}

#[derive(Debug, Subcommand)]
pub enum ListCommand {
    Model(ListArgs),
    #[command(name = "model-adapter", alias = "adapter")]
    Adapter(ListArgs),
}

#[derive(Debug, Subcommand)]
pub enum AdapterCommand {
    /// List built-in and project adapters.
    List(ListArgs),
    /// Render an adapter's templates offline (no endpoint) and validate the result.
    Test(AdapterTestArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print JSON instead of a table.
    #[arg(short, long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ModelTestArgs {
    /// The model's key.
    pub key: String,
    /// JSON file with the model input (required for tasks other than `chat_completion`).
    #[arg(long, value_name = "FILE")]
    pub model_input: Option<PathBuf>,
    /// Load the model from this file instead of the project's `models/`.
    #[arg(short = 'f', long = "file", value_name = "MODEL.yaml")]
    pub file: Option<PathBuf>,
    /// Print one JSON document instead of the four steps.
    #[arg(short, long)]
    pub json: bool,
    /// Show full Python tracebacks.
    #[arg(short, long)]
    pub verbose: bool,
    /// Retry failed attempts as the model's retry policy says (default: one attempt).
    #[arg(long)]
    pub retries: bool,
    /// Test again whenever the model file, its snippet or its adapter changes (Ctrl-C stops).
    #[arg(short, long)]
    pub watch: bool,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The project directory (created if missing; default: the current directory).
    pub dir: Option<PathBuf>,
    /// The key of the scaffolded model (default: `my-model`).
    #[arg(long, value_name = "KEY")]
    pub model: Option<String>,
    /// Replace files that already exist.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct ModelNewArgs {
    /// The new model's key (letters, digits, `_` and `-`).
    pub key: String,
    /// The endpoint the snippet POSTs to (a `$VAR` may override it, see the written file).
    #[arg(long)]
    pub url: String,
    /// The adapter between the canonical chat format and the endpoint's.
    #[arg(long, default_value = "latticeflow$openai_chat_completion")]
    pub adapter: String,
    /// Replace the model's files if they exist.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// The entity kind (default: all of them, with `--output`).
    #[arg(value_enum, required_unless_present = "output")]
    pub kind: Option<crate::schema::SchemaKind>,
    /// Write `<kind>.json` for every kind into this folder instead of printing.
    #[arg(short, long, value_name = "DIR", conflicts_with = "kind")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct AdapterTestArgs {
    /// The adapter's key.
    pub key: String,
    /// JSON file with the canonical model input (default: one user message "Hello!").
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// File with a raw response body to run through `process_output`.
    #[arg(long, value_name = "FILE")]
    pub body: Option<PathBuf>,
    /// Status code given to `process_output`.
    #[arg(long, default_value_t = 200)]
    pub status_code: u16,
    /// `model_info.model_key` seen by the templates.
    #[arg(long)]
    pub model_key: Option<String>,
    /// The task whose output shape is checked.
    #[arg(long, value_enum, default_value_t = TaskArg::ChatCompletion)]
    pub task: TaskArg,
    /// Print JSON.
    #[arg(short, long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum TaskArg {
    ChatCompletion,
    Embeddings,
    Custom,
}

impl From<TaskArg> for crate::model::io::Task {
    fn from(t: TaskArg) -> Self {
        match t {
            TaskArg::ChatCompletion => crate::model::io::Task::ChatCompletion,
            TaskArg::Embeddings => crate::model::io::Task::Embeddings,
            TaskArg::Custom => crate::model::io::Task::Custom,
        }
    }
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Files or directories to check (default: the whole project).
    pub paths: Vec<PathBuf>,
    /// Print one JSON report (a verdict per file) on stdout.
    #[arg(short, long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Store a secret; the value is read from stdin (or a prompt), never from the command line.
    Set { name: String },
    /// List stored secret names (never values).
    List(ListArgs),
    /// Remove a stored secret.
    Delete { name: String },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The run config.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "RUN.yaml",
        required_unless_present = "resume"
    )]
    pub file: Option<PathBuf>,
    /// Finish an interrupted run in this directory, with the flags it started with.
    #[arg(long, value_name = "RUN_DIR", conflicts_with = "file")]
    pub resume: Option<PathBuf>,
    /// With `--resume`: run the samples that failed again (their old records are moved to
    /// `samples.retried.jsonl`).
    #[arg(long, requires = "resume")]
    pub retry_failed: bool,
    /// With `--resume`: continue even though files, variables or flags changed since the run
    /// started.
    #[arg(long, requires = "resume")]
    pub force_resume: bool,
    /// Where to write results (default: `runs/<time>-<evaluation>/`).
    #[arg(short, long, value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Stop at the first failed sample.
    #[arg(long)]
    pub fail_fast: bool,
    /// Stop after this many failed samples.
    #[arg(long, value_name = "N")]
    pub max_errors: Option<usize>,
    /// Neither read nor write the response cache.
    #[arg(long)]
    pub no_cache: bool,
    /// No progress bar or progress lines.
    #[arg(long)]
    pub no_progress: bool,
    /// Print the summary as JSON.
    #[arg(short, long)]
    pub json: bool,
    /// Run only shard I of N (0-based): the samples whose id hashes to I.
    #[arg(long, value_name = "I/N", conflicts_with = "shards")]
    pub shard: Option<crate::eval::shard::Shard>,
    /// Run one of N shards, its index taken from `JOB_COMPLETION_INDEX` (Kubernetes) or
    /// `SLURM_ARRAY_TASK_ID` (Slurm).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub shards: Option<u32>,
    /// Stop starting samples once the USD spent plus the likely cost of the samples in flight
    /// would pass this (needs `pricing` on the models).
    #[arg(long, value_name = "USD")]
    pub max_cost: Option<f64>,
    /// Write a JUnit XML file: one test case per task specification and per policy rule.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Write a Markdown summary (metrics with 95% CIs, policy rules), fit for a pull request.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
    #[command(flatten)]
    pub limits: LimitsArgs,
}

/// Limits shared by every process that uses the same Redis.
#[derive(Debug, Args)]
pub struct LimitsArgs {
    /// Share every model's `rate_limit`, `max_concurrent_requests` and `tokens_per_minute`
    /// with every lfeval process using this Redis (`redis://HOST:PORT[/DB]`).
    #[arg(long = "limits", env = "LFEVAL_LIMITS", value_name = "URL", hide_env_values = true)]
    pub url: Option<String>,
    /// Keeps unrelated runs that use the same model keys (other provider accounts) apart.
    #[arg(
        long = "limits-namespace",
        env = "LFEVAL_LIMITS_NAMESPACE",
        value_name = "NAME",
        default_value = "default"
    )]
    pub namespace: String,
    /// How long a concurrency lease outlives a process that stopped renewing it (a crash).
    #[arg(long = "limits-lease", value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub lease: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The shards' run directories.
    #[arg(required = true, value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
    /// The merged run directory (new or empty).
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    /// The run config, when it is not where the shards ran it from.
    #[arg(short = 'f', long = "file", value_name = "RUN.yaml")]
    pub file: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(short, long)]
    pub json: bool,
}

/// `30s`, `500ms`, `2m` or a plain number of seconds.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("invalid duration `{text}`; hint: write e.g. `30s`, `500ms` or `2m`");
    let duration = match text.trim().parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 => std::time::Duration::from_secs_f64(secs),
        Ok(_) => return Err(bad()),
        Err(_) => {
            let signed: jiff::SignedDuration = text.trim().parse().map_err(|_| bad())?;
            std::time::Duration::try_from(signed).map_err(|_| bad())?
        }
    };
    if duration < std::time::Duration::from_millis(100) {
        return Err(bad());
    }
    Ok(duration)
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The run directory.
    pub run_dir: PathBuf,
    /// Open the report in a browser (`$BROWSER`, or the system's default).
    #[arg(long)]
    pub open: bool,
    /// A baseline run to compare against: the report gets a comparison view, flips first.
    #[arg(long, value_name = "RUN_DIR")]
    pub baseline: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The baseline run directory (A).
    pub baseline: PathBuf,
    /// The run directory compared against it (B).
    pub current: PathBuf,
    /// Print the comparison as JSON.
    #[arg(short, long)]
    pub json: bool,
    /// Write a Markdown summary of the comparison, fit for a pull request.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
    /// Write a JUnit XML file: one test case per task specification and per policy rule.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Exit 1 when a metric got worse with a p-value below `--alpha`.
    #[arg(long)]
    pub fail_on_regression: bool,
    /// Significance level for regressions.
    #[arg(long, default_value_t = 0.05, value_name = "P")]
    pub alpha: f64,
}

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// The runs under `runs/`, newest first.
    List(ListArgs),
    /// One run's summary: metrics, failures, cost and where its files are.
    Show(RunsShowArgs),
}

#[derive(Debug, Args)]
pub struct RunsShowArgs {
    /// A run directory, or the name of one under `runs/` (a unique prefix is enough).
    pub run: String,
    /// Print JSON.
    #[arg(short, long)]
    pub json: bool,
}
