//! All terminal output: results to stdout, progress and diagnostics to stderr, every byte
//! passed through the redactor. Colour only on a terminal and never with `NO_COLOR`.

use std::io::{IsTerminal, Write};

use owo_colors::{OwoColorize, Style};

#[derive(Debug, Clone, Copy)]
pub struct Printer {
    pub color: bool,
    pub stderr_tty: bool,
}

impl Printer {
    pub fn new(choice: ColorChoice) -> Printer {
        let stderr_tty = std::io::stderr().is_terminal();
        let color = match choice {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && stderr_tty,
        };
        Printer { color, stderr_tty }
    }

    /// Writes to stdout (lfeval's own, see [`crate::stdio`]); a closed pipe (`lfeval … | head`)
    /// is not an error.
    pub fn out(&self, text: &str) {
        let text = crate::redact::redact(text);
        let _ = crate::stdio::write_stdout(text.as_bytes());
    }

    pub fn outln(&self, text: &str) {
        self.out(&format!("{text}\n"));
    }

    pub fn errln(&self, text: &str) {
        let text = crate::redact::redact(text);
        let mut stderr = std::io::stderr().lock();
        let _ = writeln!(stderr, "{text}");
    }

    pub fn error(&self, text: &str) {
        self.labelled("error", Style::new().red().bold(), text);
    }

    pub fn warn(&self, text: &str) {
        self.labelled("warning", Style::new().yellow().bold(), text);
    }

    /// Something worth knowing that is not wrong, such as what held a run back.
    pub fn note(&self, text: &str) {
        self.labelled("note", Style::new().cyan().bold(), text);
    }

    /// `label: text` on stderr, the label in `style` when colour is on.
    fn labelled(&self, label: &str, style: Style, text: &str) {
        let label = if self.color {
            label.style(style).to_string()
        } else {
            label.to_owned()
        };
        self.errln(&format!("{label}: {text}"));
    }

    pub fn heading(&self, text: &str) -> String {
        if self.color {
            text.bold().to_string()
        } else {
            text.to_owned()
        }
    }

    pub fn ok(&self, text: &str) -> String {
        if self.color {
            text.green().to_string()
        } else {
            text.to_owned()
        }
    }

    pub fn bad(&self, text: &str) -> String {
        if self.color {
            text.red().to_string()
        } else {
            text.to_owned()
        }
    }

    pub fn dim(&self, text: &str) -> String {
        if self.color {
            text.dimmed().to_string()
        } else {
            text.to_owned()
        }
    }
}

#[derive(Debug, Clone, Copy, Default, clap::ValueEnum)]
pub enum ColorChoice {
    #[default]
    Auto,
    Always,
    Never,
}
