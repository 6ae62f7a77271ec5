//! `kiln`: train and evaluate PyTorch-equivalent models from the command line.
//!
//! The binary is thin: flags become library calls of kiln-tensor,
//! kiln-losses, kiln-optim and kiln-loop. It is the only crate that uses
//! `anyhow`.
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use kiln_cli::{run, UsageError};
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
    /// Train the quickstart model on (Fashion)MNIST, printing what PyTorch's tutorial prints.
    Train(Box<run::TrainArgs>),
    /// Run the test loop on a checkpoint.
    Eval(run::EvalArgs),
    /// Draw a run's loss, accuracy and lr curves to PNG and SVG.
    Plot(run::PlotArgs),
    /// List every loss and its options with their defaults.
    Losses,
    /// List every optimizer and its options with their defaults.
    Optimizers,
    /// List every lr scheduler and its options with their defaults.
    Schedulers,
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
        // clap's report spans several lines; keep its first, add the way out.
        let text = err.to_string();
        let first = text.lines().next().unwrap_or("invalid arguments");
        eprintln!("{first}; see 'kiln --help'");
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    let (cli, matches) = match parse() {
        Ok(parsed) => parsed,
        Err(code) => return code,
    };
    let result = match cli.command {
        Command::Train(args) => {
            let sub = matches
                .subcommand_matches("train")
                .cloned()
                .unwrap_or_default();
            run::merge_config(*args, &sub).and_then(|args| run::train(&args))
        }
        Command::Eval(args) => run::eval(&args),
        Command::Plot(args) => run::plot(&args),
        Command::Losses => {
            print!("{}", kiln_losses::registry().describe());
            Ok(())
        }
        Command::Schedulers => {
            print!("{}", kiln_optim::scheduler::schedulers().describe());
            Ok(())
        }
        Command::Optimizers => {
            print!("{}", run::describe_optimizers());
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let code = if err.downcast_ref::<UsageError>().is_some() {
                2
            } else {
                1
            };
            // One line: the chain of causes joined, libtorch backtraces dropped.
            let message = format!("{err:#}");
            eprintln!(
                "error: {}",
                message.lines().next().unwrap_or("unknown error")
            );
            ExitCode::from(code)
        }
    }
}
