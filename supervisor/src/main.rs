//! `danube-supervisor`: the small program Danube runs inside job pods. See
//! each module for one command.

mod attach;
mod idle;
mod install;
mod json;
mod pack;
mod request;
mod run;
mod shell;
mod signals;
mod steps;
mod untar;
mod words;

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "\
usage: danube-supervisor COMMAND
  install DIR                  copy this binary to DIR/danube-supervisor
  idle                         wait for SIGTERM, reaping orphaned processes
  run [--state-dir DIR] [--shell PATH]
                               run the step whose JSON request is the first line of stdin
  attach ID --stdout-offset N --stderr-offset M [--state-dir DIR]
                               resume a step's output from those offsets and exit with its code
  status ID [--state-dir DIR]  print running, exited N, missing or lost, then
                               `output N M`: the bytes of stdout and stderr so far
  shell [--shell PATH]         turn echo off, print `danube-shell-ready`, read a step's JSON
                               request from stdin and start an interactive shell with it
  untar DIR                    unpack a tar stream from stdin into DIR
  pack DIR [--newer-than PATH] [--max-bytes N]
                               write a tar stream of DIR (entries changed since PATH) to stdout";

/// Exit code for a command line that cannot be understood.
const USAGE_ERROR: u8 = 2;

fn main() -> ExitCode {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    match dispatch(&arguments) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(message) => {
            eprintln!("danube-supervisor: {message}\n{USAGE}");
            ExitCode::from(USAGE_ERROR)
        }
    }
}

fn dispatch(arguments: &[String]) -> Result<i32, String> {
    let Some((command, rest)) = arguments.split_first() else {
        return Err("missing command".into());
    };
    let mut options = Options::parse(rest)?;
    match command.as_str() {
        "install" => {
            let dir = options.single_positional("DIR")?;
            options.finish()?;
            match install::install(&PathBuf::from(dir)) {
                Ok(path) => {
                    println!("installed {}", path.display());
                    Ok(0)
                }
                Err(message) => {
                    eprintln!("danube-supervisor: {message}");
                    Ok(run::SUPERVISOR_FAILED)
                }
            }
        }
        "idle" => {
            options.finish()?;
            Ok(idle::idle())
        }
        "run" => {
            let run_options = run::RunOptions {
                state_dir: options.state_dir(),
                shell: options
                    .take("--shell")
                    .map_or_else(|| PathBuf::from("/bin/sh"), PathBuf::from),
            };
            options.finish()?;
            Ok(run::run(&run_options))
        }
        "attach" => {
            let id = options.single_positional("ID")?;
            let stdout = options.offset("--stdout-offset")?;
            let stderr = options.offset("--stderr-offset")?;
            let state_dir = options.state_dir();
            options.finish()?;
            Ok(attach::attach(&state_dir, &id, (stdout, stderr)))
        }
        "status" => {
            let id = options.single_positional("ID")?;
            let state_dir = options.state_dir();
            options.finish()?;
            match attach::status(&state_dir, &id) {
                Ok(status) => {
                    println!("{status}");
                    if let Some((stdout, stderr)) = attach::output_sizes(&state_dir, &id) {
                        println!("output {stdout} {stderr}");
                    }
                    Ok(0)
                }
                Err(message) => {
                    eprintln!("danube-supervisor: {message}");
                    Ok(run::SUPERVISOR_FAILED)
                }
            }
        }
        "shell" => {
            let shell = options
                .take("--shell")
                .map_or_else(|| PathBuf::from("/bin/sh"), PathBuf::from);
            options.finish()?;
            Ok(shell::shell(&shell))
        }
        "untar" => {
            let dir = options.single_positional("DIR")?;
            options.finish()?;
            match untar::untar(&mut std::io::stdin().lock(), &PathBuf::from(dir)) {
                Ok(count) => {
                    println!("unpacked {count} entries");
                    Ok(0)
                }
                Err(message) => {
                    eprintln!("danube-supervisor: {message}");
                    Ok(run::SUPERVISOR_FAILED)
                }
            }
        }
        "pack" => {
            let pack_options = pack::PackOptions {
                root: PathBuf::from(options.single_positional("DIR")?),
                newer_than: options.take("--newer-than").map(PathBuf::from),
                max_bytes: options.optional_count("--max-bytes")?,
            };
            options.finish()?;
            let raw_stdout = run::raw_stdout();
            let mut stdout = std::io::BufWriter::with_capacity(64 * 1024, &*raw_stdout);
            match pack::pack(&pack_options, &mut stdout) {
                Ok(summary) => {
                    eprintln!(
                        "packed {} of {} entries, {} over the size limit",
                        summary.packed, summary.listed, summary.skipped_over_limit
                    );
                    Ok(0)
                }
                Err(message) => {
                    eprintln!("danube-supervisor: {message}");
                    Ok(run::SUPERVISOR_FAILED)
                }
            }
        }
        other => Err(format!("unknown command `{other}`")),
    }
}

/// `--name value` pairs and positional arguments of one command.
struct Options {
    named: Vec<(String, String)>,
    positional: Vec<String>,
}

impl Options {
    fn parse(arguments: &[String]) -> Result<Options, String> {
        let mut named = Vec::new();
        let mut positional = Vec::new();
        let mut iter = arguments.iter();
        while let Some(argument) = iter.next() {
            if let Some((name, value)) = argument
                .split_once('=')
                .filter(|_| argument.starts_with("--"))
            {
                named.push((name.to_owned(), value.to_owned()));
            } else if argument.starts_with("--") {
                let value = iter
                    .next()
                    .ok_or_else(|| format!("option `{argument}` needs a value"))?;
                named.push((argument.clone(), value.clone()));
            } else {
                positional.push(argument.clone());
            }
        }
        Ok(Options { named, positional })
    }

    fn take(&mut self, name: &str) -> Option<String> {
        let index = self.named.iter().position(|(option, _)| option == name)?;
        Some(self.named.remove(index).1)
    }

    fn state_dir(&mut self) -> PathBuf {
        self.take("--state-dir")
            .map_or_else(|| PathBuf::from(steps::DEFAULT_STATE_DIR), PathBuf::from)
    }

    fn offset(&mut self, name: &str) -> Result<u64, String> {
        self.optional_count(name)?
            .ok_or_else(|| format!("option `{name}` is missing"))
    }

    fn optional_count(&mut self, name: &str) -> Result<Option<u64>, String> {
        let Some(value) = self.take(name) else {
            return Ok(None);
        };
        value
            .parse()
            .map(Some)
            .map_err(|_| format!("option `{name}` must be a byte count, got `{value}`"))
    }

    fn single_positional(&mut self, what: &str) -> Result<String, String> {
        if self.positional.len() != 1 {
            return Err(format!(
                "expected one {what} argument, got {}",
                self.positional.len()
            ));
        }
        Ok(self.positional.remove(0))
    }

    /// Fails on anything left over, so a typo is never silently ignored.
    fn finish(self) -> Result<(), String> {
        if let Some((name, _)) = self.named.first() {
            return Err(format!("unknown option `{name}`"));
        }
        if let Some(extra) = self.positional.first() {
            return Err(format!("unexpected argument `{extra}`"));
        }
        Ok(())
    }
}
