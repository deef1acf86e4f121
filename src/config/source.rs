//! Where a [`Config`] comes from: the environment, an optional `.env` file (keys that
//! name no setting reported), command-line flags; or, for tests and embedders, a given
//! set of variables with the process environment never read.
//!
//! It must never change the environment after `main` has started a thread.

use std::ffi::OsString;

use clap::{CommandFactory, FromArgMatches, Parser};

use super::{Config, OTHER_KNOWN_VARS};

impl Config {
    /// Reads `.env` (if present, without overriding the environment), the environment
    /// and `args`. A bad value, a malformed `.env`, `--help` and `--version` come back
    /// as the error to print (`clap::Error::exit` exits 2 for errors, 0 for help).
    pub fn from_env_and_args<I, T>(args: I) -> Result<Config, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let unknown = load_dotenv(std::path::Path::new(".env"))?;
        let mut config = Config::try_parse_from(args)?;
        config.unknown_dotenv_keys = unknown;
        Ok(config)
    }

    /// Parses `args` with `vars` as the only environment: the process environment is
    /// never read. What tests and embedders use to build a configuration from a known
    /// source.
    pub fn from_vars<I, T, V, K, S>(args: I, vars: V) -> Result<Config, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
        V: IntoIterator<Item = (K, S)>,
        K: AsRef<str>,
        S: AsRef<str>,
    {
        let cmd = Config::command();
        let longs: std::collections::HashMap<String, String> = cmd
            .get_arguments()
            .filter_map(|a| {
                let env = a.get_env()?.to_str()?.to_owned();
                Some((env, a.get_long()?.to_owned()))
            })
            .collect();
        let mut args = args.into_iter().map(Into::into);
        let mut argv: Vec<OsString> = vec![args.next().unwrap_or_else(|| "agentd".into())];
        // Variables go first so that flags given in `args` win, as over the environment.
        for (k, v) in vars {
            if let Some(long) = longs.get(k.as_ref()) {
                argv.push(format!("--{long}={}", v.as_ref()).into());
            }
        }
        argv.extend(args);
        let matches = cmd
            .args_override_self(true)
            .mut_args(|a| a.env(None))
            .try_get_matches_from(argv)?;
        Config::from_arg_matches(&matches)
    }

    /// The defaults, whatever the environment holds: what tests start from.
    pub fn defaults() -> Config {
        Config::from_vars(["agentd"], std::iter::empty::<(&str, &str)>())
            .expect("the defaults parse")
    }

    /// Every environment name agentd reads.
    pub fn known_vars() -> Vec<String> {
        let mut names: Vec<String> = Config::command()
            .get_arguments()
            .filter_map(|a| a.get_env()?.to_str().map(str::to_owned))
            .collect();
        names.extend(OTHER_KNOWN_VARS.iter().map(|s| (*s).to_owned()));
        names
    }
}

/// Loads `path` into the environment (variables already set win) and returns its keys
/// that name no setting, so a misspelt variable is reported rather than ignored.
fn load_dotenv(path: &std::path::Path) -> Result<Vec<String>, clap::Error> {
    let bad = |e: dotenvy::Error| {
        clap::Error::raw(
            clap::error::ErrorKind::ValueValidation,
            format!("cannot read {}: {e}\n", path.display()),
        )
    };
    let entries = match dotenvy::from_path_iter(path) {
        Ok(it) => it.collect::<Result<Vec<_>, _>>().map_err(bad)?,
        Err(e) if e.not_found() => return Ok(Vec::new()),
        Err(e) => return Err(bad(e)),
    };
    let known = Config::known_vars();
    let mut unknown = Vec::new();
    for (key, value) in entries {
        if !known.contains(&key) {
            unknown.push(key.clone());
        }
        // Called from `main` before any thread is started, so nothing reads the
        // environment while it changes.
        if std::env::var_os(&key).is_none() {
            #[allow(clippy::disallowed_methods)]
            std::env::set_var(&key, value);
        }
    }
    Ok(unknown)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    #[test]
    #[allow(clippy::disallowed_methods)] // the environment this test must not read
    fn defaults_ignore_the_environment() {
        // The variable is set for this process only; `defaults` must not see it. Other
        // tests of this module never read PORT from the environment.
        std::env::set_var("PORT", "4444");
        assert_eq!(Config::defaults().port, 3000);
        std::env::remove_var("PORT");
    }

    #[test]
    fn variables_come_from_the_given_source_and_flags_win() {
        let c = Config::from_vars(["agentd"], [("PORT", "4000"), ("WORKERS", "3")]).unwrap();
        assert_eq!((c.port, c.workers), (4000, Some(3)));
        let c = Config::from_vars(["agentd", "--port", "5000"], [("PORT", "4000")]).unwrap();
        assert_eq!(c.port, 5000);
        let e = Config::from_vars(["agentd"], [("BODY_LIMIT", "-1")]).unwrap_err();
        assert!(e.to_string().contains("BODY_LIMIT"), "{e}");
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn host_names_resolve_and_addresses_pass_through() {
        let c = Config::from_vars(["agentd"], [("HOST", "localhost")]).unwrap();
        assert!(c.host.ip().is_loopback(), "{}", c.host);
        assert_eq!(c.host.to_string(), format!("localhost ({})", c.host.ip()));
        let c = Config::from_vars(["agentd"], [("HOST", "::1")]).unwrap();
        assert_eq!(c.host.ip(), "::1".parse::<IpAddr>().unwrap());
        let e = Config::from_vars(["agentd"], [("HOST", "no such host.invalid")]).unwrap_err();
        assert!(e.to_string().contains("HOST"), "{e}");
    }

    #[test]
    fn dotenv_keys_naming_no_setting_are_reported() {
        let dir = std::env::temp_dir().join(format!("agentd-dotenv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(".env");
        std::fs::write(
            &path,
            "AGENTD_TEST_DOTENV_PROT=1\nLLM_STICKY=false\nAGENTD_TEST_UNSET_PORT_X=2\n",
        )
        .unwrap();
        let unknown = load_dotenv(&path).unwrap();
        assert_eq!(
            unknown,
            ["AGENTD_TEST_DOTENV_PROT", "AGENTD_TEST_UNSET_PORT_X"]
        );
        std::fs::write(&path, "NOT VALID LINE ===\n").unwrap();
        assert!(load_dotenv(&path).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
