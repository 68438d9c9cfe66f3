//! Where `$VAR` values come from: the process environment first, then `--env FILE`, then
//! `.env` in the project directory (so `--env` overrides `.env`, and a real environment
//! variable beats both).

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;

#[derive(Debug, Default, Clone)]
pub struct Variables {
    /// `--env FILE` values, then `.env` values (first hit wins).
    files: Vec<HashMap<String, String>>,
    /// Overrides used by tests and `adapter test`; never the process environment.
    fixed: Option<HashMap<String, String>>,
}

impl Variables {
    /// Loads `.env` from `project_dir` (if present) and `env_file` (must exist when given).
    pub fn load(project_dir: &Path, env_file: Option<&Path>) -> anyhow::Result<Variables> {
        let mut files = Vec::new();
        if let Some(path) = env_file {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("cannot read env file `{}`", path.display()))?;
            files.push(parse_dotenv(&text));
        }
        let dotenv = project_dir.join(".env");
        if let Ok(text) = std::fs::read_to_string(&dotenv) {
            files.push(parse_dotenv(&text));
        }
        Ok(Variables { files, fixed: None })
    }

    /// A fixed set of variables (no process environment); for tests.
    pub fn fixed(vars: HashMap<String, String>) -> Variables {
        Variables {
            files: Vec::new(),
            fixed: Some(vars),
        }
    }

    pub fn get(&self, name: &str) -> Option<String> {
        if let Some(fixed) = &self.fixed {
            return fixed.get(name).cloned();
        }
        if let Ok(v) = std::env::var(name) {
            return Some(v);
        }
        self.files.iter().find_map(|f| f.get(name).cloned())
    }
}

/// Parses `KEY=value` lines: `#` comments, optional `export `, single or double quotes.
pub fn parse_dotenv(text: &str) -> HashMap<String, String> {
    let mut vars = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        let value = if let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            inner.replace("\\n", "\n").replace("\\\"", "\"")
        } else if let Some(inner) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
            inner.to_owned()
        } else {
            // An unquoted value ends at an inline comment.
            value.split(" #").next().unwrap_or("").trim().to_owned()
        };
        vars.insert(key.trim().to_owned(), value);
    }
    vars
}

#[cfg(test)]
mod tests {
    use super::parse_dotenv;

    #[test]
    fn dotenv_forms() {
        let vars = parse_dotenv("# c\nA=1\nexport B=\"two words\"\nC='x#y'\nD=plain # comment\n\nbad line\n");
        assert_eq!(vars["A"], "1");
        assert_eq!(vars["B"], "two words");
        assert_eq!(vars["C"], "x#y");
        assert_eq!(vars["D"], "plain");
        assert_eq!(vars.len(), 4);
    }
}
