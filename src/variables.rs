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
            files.push(parse_dotenv(&text, path)?);
        }
        let dotenv = project_dir.join(".env");
        if let Ok(text) = std::fs::read_to_string(&dotenv) {
            files.push(parse_dotenv(&text, &dotenv)?);
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

/// Parses a `.env` file the way dotenv tools do (dotenvy): `#` comments, `export KEY=v`, single
/// quotes taken literally, double quotes with escapes and multi-line values, inline comments after
/// unquoted and quoted values. Variables in values (`${OTHER}`) are not expanded here: lfeval
/// expands `$VAR` where a value is used.
pub fn parse_dotenv(text: &str, path: &Path) -> anyhow::Result<HashMap<String, String>> {
    let mut vars = HashMap::new();
    for item in dotenvy::from_read_iter(text.as_bytes()) {
        let (key, value) = item.map_err(|e| match e {
            dotenvy::Error::LineParse(line, index) => anyhow::anyhow!(
                "cannot parse `{}`: invalid line `{}` (at character {})\nhint: write `KEY=value`, quoting values that hold spaces or `#`",
                path.display(),
                line.lines().next().unwrap_or(""),
                index + 1
            ),
            other => anyhow::anyhow!("cannot parse `{}`: {other}", path.display()),
        })?;
        vars.insert(key, value);
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::parse_dotenv;
    use std::path::Path;

    fn parse(text: &str) -> std::collections::HashMap<String, String> {
        parse_dotenv(text, Path::new(".env")).unwrap()
    }

    #[test]
    fn dotenv_conventions() {
        let vars = parse(concat!(
            "# a comment\n",
            "A=1\n",
            "export B=\"two words\"\n",
            "C='x#y'\n",
            "D=plain # comment\n",
            "E=\"quoted\" # comment after quotes\n",
            "F=\"line one\\nline two\"\n",
            "G=\"multi\nline\"\n",
            "H='no $EXPANSION \\n here'\n",
            "\n",
        ));
        assert_eq!(vars["A"], "1");
        assert_eq!(vars["B"], "two words");
        assert_eq!(vars["C"], "x#y");
        assert_eq!(vars["D"], "plain");
        assert_eq!(vars["E"], "quoted");
        assert_eq!(vars["F"], "line one\nline two");
        assert_eq!(vars["G"], "multi\nline");
        assert_eq!(vars["H"], "no $EXPANSION \\n here");
        assert_eq!(vars.len(), 8);
    }

    #[test]
    fn a_broken_line_is_an_error_naming_the_file() {
        let err = parse_dotenv("GOOD=1\nnot a line\n", Path::new("proj/.env")).unwrap_err();
        assert!(err.to_string().contains("proj/.env"), "{err}");
    }
}
