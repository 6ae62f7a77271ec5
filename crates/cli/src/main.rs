//! `kiln`: train and evaluate PyTorch-equivalent models from the command line.
//!
//! The binary is thin: it parses flags, calls kiln-loop's run library
//! (`kiln_loop::run`) or a registry, and maps errors to one line and an exit
//! code (2 for a usage error, 128 + the signal for an interrupt, 1 for any
//! other failure). It is the only crate that uses `anyhow`.
#![forbid(unsafe_code)]
mod args;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use kiln_loop::run::Registries;
use std::process::ExitCode;

/// Train neural networks on libtorch, with PyTorch's numbers.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train a model (the quickstart's by default) on (Fashion)MNIST or your data, printing what
    /// PyTorch's tutorial prints.
    Train(Box<args::TrainArgs>),
    /// Find a learning rate (Lightning's lr_find) for the model, optimizer and data of `kiln
    /// train`'s flags: prints the suggestion, draws the curve into the run directory.
    LrFind(Box<args::LrFindArgs>),
    /// Run the test loop on a checkpoint (or a PyTorch state dict).
    Eval(args::EvalArgs),
    /// Print a model's summary (Lightning's ModelSummary table) without training.
    Summary(args::SummaryArgs),
    /// Write a checkpoint's (or a PyTorch state dict's) outputs for a data set, in order, to a
    /// .safetensors or .csv file.
    Predict(args::PredictArgs),
    /// Draw a run's loss, accuracy and lr curves to PNG and SVG.
    Plot(args::PlotArgs),
    /// Turn a text file into a character-level token directory (nanoGPT's
    /// shakespeare_char/prepare.py): train.bin, val.bin, meta.pkl.
    PrepareText(args::PrepareTextArgs),
    /// Generate text from a run's newest checkpoint of a gpt model (nanoGPT's sample.py).
    Sample(args::SampleArgs),
    /// List every loss and its options with their defaults.
    Losses,
    /// List every optimizer and its options with their defaults.
    Optimizers,
    /// List every lr scheduler and its options with their defaults.
    Schedulers,
    /// List every built-in model and its options with their defaults.
    Models,
    /// List every image transform (--transform) and its options with their defaults.
    Transforms,
}

/// The subcommand the command line names, if any.
fn subcommand() -> Option<String> {
    let name = std::env::args().nth(1)?;
    Cli::command()
        .get_subcommands()
        .any(|c| c.get_name() == name)
        .then_some(name)
}

/// clap's report, compacted: the error with its details and tips on one
/// line, the usage line, and where to read more (the subcommand's help).
fn clap_error(err: &clap::Error) -> String {
    let text = err.to_string();
    let mut message = String::new();
    let mut tips = Vec::new();
    let mut usage = None;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(tip) = line.strip_prefix("tip: ") {
            tips.push(tip.to_string());
        } else if line.starts_with("Usage: ") {
            usage = Some(line.to_string());
        } else if line.starts_with("For more information") {
        } else if message.is_empty() {
            message = line.strip_prefix("error: ").unwrap_or(line).to_string();
        } else {
            let sep = if message.ends_with(':') { " " } else { ", " };
            message.push_str(sep);
            message.push_str(line);
        }
    }
    if !tips.is_empty() {
        message.push_str(&format!(" ({})", tips.join("; ")));
    }
    let sub = subcommand();
    let mut cmd = Cli::command();
    let usage = usage.unwrap_or_else(|| {
        let rendered = match sub.as_deref().and_then(|s| cmd.find_subcommand_mut(s)) {
            Some(c) => c.render_usage(),
            None => cmd.render_usage(),
        };
        rendered.to_string().trim().to_string()
    });
    let usage = usage.replace("Usage: train", "Usage: kiln train");
    let command = match &sub {
        Some(s) => format!("kiln {s}"),
        None => "kiln".into(),
    };
    format!("error: {message}\n{usage}\nFor more information, try '{command} --help'.\n")
}

fn parse() -> Result<(Cli, clap::ArgMatches), ExitCode> {
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m).map(|cli| (cli, m)));
    parsed.map_err(|err| {
        if !err.use_stderr() {
            // --help and --version go to stdout and succeed.
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        eprint!("{}", clap_error(&err));
        ExitCode::from(2)
    })
}

/// The error and its causes on one line; a cause already spelled out by the
/// message before it is not repeated, and libtorch backtraces are dropped.
fn one_line(err: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        let text = text.lines().next().unwrap_or_default().trim();
        if text.is_empty() || message.contains(text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(text);
    }
    if message.is_empty() {
        message.push_str("unknown error");
    }
    message
}

fn run(cli: Cli, matches: &clap::ArgMatches) -> anyhow::Result<()> {
    match cli.command {
        Command::Train(args) => {
            let sub = matches
                .subcommand_matches("train")
                .cloned()
                .unwrap_or_default();
            kiln_loop::run::train(args.request(&sub)?, &Registries::default())?;
        }
        Command::LrFind(args) => {
            let sub = matches
                .subcommand_matches("lr-find")
                .cloned()
                .unwrap_or_default();
            let report = kiln_loop::run::lr_find(args.request(&sub)?, &Registries::default())?;
            match report.result.suggestion {
                Some(lr) => println!(
                    "Suggested learning rate: {}",
                    kiln_tensor::spec::py_float(lr)
                ),
                None => println!(
                    "No suggestion: fewer than 2 finite points after the first {} (raise --num-training)",
                    kiln_loop::lr_find::SKIP_BEGIN
                ),
            }
        }
        Command::Eval(args) => {
            kiln_loop::run::evaluate(args.request()?, &Registries::default())?;
        }
        Command::Summary(args) => {
            println!(
                "{}",
                kiln_loop::run::summarize(args.flags()?, &Registries::default())?
            );
        }
        Command::Predict(args) => {
            kiln_loop::run::predict(args.request()?, &Registries::default())?;
        }
        Command::Plot(args) => {
            let out = args.out.unwrap_or_else(|| args.run_dir.join("plots"));
            let notices = args::stderr_notices(false);
            for path in kiln_loop::plot::plot_run(&args.run_dir, &out, &mut |w| notices.warn(w))? {
                println!("{}", path.display());
            }
        }
        Command::PrepareText(args) => {
            println!("{}", kiln_loop::lm::prepare_text(&args.input, &args.out)?);
        }
        Command::Sample(args) => {
            let notices = args::stderr_notices(false);
            let device = args
                .device
                .parse::<kiln_tensor::device::DeviceSpec>()?
                .resolve()?;
            let sampled = kiln_loop::lm::sample_checkpoint(
                &args.checkpoint,
                &args.config()?,
                device,
                &mut |w| notices.warn(w),
            )?;
            notices.send(kiln_loop::Notice::Sampling {
                checkpoint: sampled.checkpoint.clone(),
                meta: sampled.meta.clone(),
            });
            let mut out = std::io::stdout().lock();
            for text in &sampled.samples {
                use std::io::Write;
                writeln!(out, "{text}\n{}", kiln_loop::lm::sample::SEPARATOR)?;
            }
        }
        Command::Losses => print!("{}", kiln_losses::registry().describe()),
        Command::Optimizers => print!("{}", kiln_optim::optimizers().describe()),
        Command::Schedulers => print!("{}", kiln_optim::scheduler::schedulers().describe()),
        Command::Models => print!("{}", kiln_loop::models::models().describe()),
        Command::Transforms => print!("{}", Registries::default().transforms.describe()),
    }
    Ok(())
}

fn main() -> ExitCode {
    let (cli, matches) = match parse() {
        Ok(parsed) => parsed,
        Err(code) => return code,
    };
    match run(cli, &matches) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let code = err
                .downcast_ref::<kiln_loop::Error>()
                .map_or(1, kiln_loop::Error::exit_code);
            eprintln!("error: {}", one_line(&err));
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
    }
}
