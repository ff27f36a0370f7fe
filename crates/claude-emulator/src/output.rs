//! Printing a run's messages as the real CLI does in each output format.

use std::io::{self, Write};

use serde_json::Value;

use crate::args::OutputFormat;

/// Prints messages in the chosen format: as they happen (stream-json), or at the end (json, text).
pub struct Output {
    format: OutputFormat,
    verbose: bool,
    held: Vec<Value>,
}

impl Output {
    pub fn new(format: OutputFormat, verbose: bool) -> Self {
        Output {
            format,
            verbose,
            held: Vec::new(),
        }
    }

    pub fn emit(&mut self, line: Value) {
        if self.format == OutputFormat::StreamJson {
            let mut stdout = io::stdout().lock();
            let _ = writeln!(stdout, "{line}");
            let _ = stdout.flush();
        } else {
            self.held.push(line);
        }
    }

    /// A line that is not a JSON object, for the garbage fault (stream-json only).
    pub fn emit_raw(&mut self, line: &str) {
        if self.format == OutputFormat::StreamJson {
            let mut stdout = io::stdout().lock();
            let _ = writeln!(stdout, "{line}");
            let _ = stdout.flush();
        }
    }

    pub fn finish(&mut self) {
        let result = self
            .held
            .iter()
            .rev()
            .find(|l| l["type"] == "result")
            .cloned();
        match self.format {
            OutputFormat::StreamJson => {}
            OutputFormat::Json if self.verbose => {
                println!("{}", Value::Array(std::mem::take(&mut self.held)))
            }
            OutputFormat::Json => {
                if let Some(r) = result {
                    println!("{r}");
                }
            }
            OutputFormat::Text => {
                if let Some(text) = result.as_ref().and_then(|r| r["result"].as_str()) {
                    println!("{text}");
                }
            }
        }
    }
}
