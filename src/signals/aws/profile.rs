//! AWS's shared configuration files (`~/.aws/config`, `~/.aws/credentials`)
//! as the SDKs and the CLI read them: the profile `AWS_PROFILE` names (else
//! `default`), its keys; else its `credential_process`; else its IAM Identity
//! Center (SSO) role, through the token `aws sso login` cached; a `role_arn`
//! is assumed at STS with the credentials of its `source_profile` (or of its
//! `credential_source`, or its `web_identity_token_file`).
//!
//! The files are read here rather than by `aws-config`'s profile parser,
//! which comes only with the rest of `aws-config` (the reason
//! `super` gives); an INI crate does not know the format's
//! `[profile NAME]` sections of the config file, its `[sso-session NAME]`
//! sections, or its indented sub-properties.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use std::time::Duration;

use aws_smithy_runtime_api::client::identity::Identity;
use serde::Deserialize;

use super::origin::{FetchError, Fetched, KeysFrom, Origin, SsoRole, sts_call, unix_s};

/// How long a `credential_process` may take (it may ask a vault, or a person's device).
const PROCESS_TIMEOUT: Duration = Duration::from_secs(60);

/// How many `source_profile` links a chain may have (the CLI's own limit is
/// lower in practice; past this it is a loop the cycle check missed).
const MAX_CHAIN: usize = 8;

/// A profile's properties, as read: `name = value`.
type Properties = HashMap<String, String>;

/// What was read from both files.
#[derive(Debug, Default)]
struct Files {
    config: PathBuf,
    credentials: PathBuf,
    /// `[profile NAME]` (and `[default]`) of the config file, then `[NAME]`
    /// of the credentials file over them (the credentials file wins).
    profiles: HashMap<String, Properties>,
    /// `[sso-session NAME]` of the config file.
    sso_sessions: HashMap<String, Properties>,
}

/// A profile could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// A file exists but could not be read.
    #[error("reading the AWS {what} file {path}")]
    Read {
        /// `config` or `credentials`.
        what: &'static str,
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `AWS_PROFILE` names a profile neither file has.
    #[error("AWS_PROFILE names the profile `{profile}`, which neither {config} nor {credentials} has")]
    Missing {
        /// The profile.
        profile: String,
        /// The config file looked in.
        config: String,
        /// The credentials file looked in.
        credentials: String,
    },
    /// A property missing or wrong.
    #[error("the AWS profile `{profile}` ({config} / {credentials}): `{field}` must be {expected}")]
    Field {
        /// The profile.
        profile: String,
        /// The property.
        field: &'static str,
        /// What it must be.
        expected: String,
        /// The config file.
        config: String,
        /// The credentials file.
        credentials: String,
    },
    /// `credential_source = EcsContainer` with an endpoint not to trust.
    #[error(transparent)]
    Container(super::container::UnsafeUri),
    /// `source_profile` leads back to a profile already on the way.
    #[error("the AWS profiles' source_profile links go round: {0}")]
    Cycle(String),
}

/// The origin the profile offers: `Ok(None)` when the profile is not named
/// and `default` is absent or holds no credentials (the next origin is tried).
pub fn origin(var: &impl Fn(&str) -> Option<String>, region: &str) -> Result<Option<Origin>, ProfileError> {
    let home = var("HOME").map(PathBuf::from).or_else(dirs::home_dir).unwrap_or_default();
    let config = var("AWS_CONFIG_FILE").map_or_else(|| home.join(".aws/config"), PathBuf::from);
    let credentials = var("AWS_SHARED_CREDENTIALS_FILE").map_or_else(|| home.join(".aws/credentials"), PathBuf::from);
    let files = Files::read(config, credentials)?;
    let named = var("AWS_PROFILE").or_else(|| var("AWS_DEFAULT_PROFILE"));
    let name = named.clone().unwrap_or_else(|| "default".into());
    if !files.profiles.contains_key(&name) {
        return match named {
            Some(profile) => Err(ProfileError::Missing {
                profile,
                config: files.config.display().to_string(),
                credentials: files.credentials.display().to_string(),
            }),
            None => Ok(None),
        };
    }
    let ctx = Resolve { files: &files, var, region, home: &home };
    ctx.resolve(&name, &mut Vec::new())
}

/// What resolving a profile needs besides its name.
struct Resolve<'a, V> {
    files: &'a Files,
    var: &'a V,
    region: &'a str,
    home: &'a Path,
}

impl<V: Fn(&str) -> Option<String>> Resolve<'_, V> {
    /// The profile's origin, in the SDKs' order of precedence; `visited` holds
    /// the chain of `source_profile` links that led here.
    fn resolve(&self, name: &str, visited: &mut Vec<String>) -> Result<Option<Origin>, ProfileError> {
        if visited.iter().any(|v| v == name) || visited.len() > MAX_CHAIN {
            visited.push(name.to_string());
            return Err(ProfileError::Cycle(visited.join(" → ")));
        }
        visited.push(name.to_string());
        let Some(p) = self.files.profiles.get(name) else {
            return Err(self.field(name, "source_profile", "a profile one of the files has"));
        };
        let get = |k: &str| p.get(k).filter(|v| !v.is_empty()).cloned();
        if let Some(role_arn) = get("role_arn") {
            return self.role(name, p, role_arn, visited).map(Some);
        }
        if get("sso_session").is_some() || get("sso_start_url").is_some() {
            return self.sso(name, p).map(|r| Some(Origin::Sso(Box::new(r))));
        }
        if let Some(command) = get("credential_process") {
            return Ok(Some(Origin::Process { profile: name.to_string(), command }));
        }
        self.keys(name, p)
    }

    /// `role_arn` with a web identity token file, a source profile or a credential source.
    fn role(
        &self,
        name: &str,
        p: &Properties,
        role_arn: String,
        visited: &mut Vec<String>,
    ) -> Result<Origin, ProfileError> {
        let get = |k: &str| p.get(k).filter(|v| !v.is_empty()).cloned();
        let session_name = get("role_session_name").unwrap_or_else(|| "backstop".into());
        let region = get("region").unwrap_or_else(|| self.region.to_string());
        let sts_url =
            (self.var)("AWS_ENDPOINT_URL_STS").unwrap_or_else(|| format!("https://sts.{region}.amazonaws.com"));
        if get("mfa_serial").is_some() {
            let expected = "absent: a role that asks for an MFA code cannot be assumed unattended \
                            (export the credentials with `aws configure export-credentials`)";
            return Err(self.field(name, "mfa_serial", expected));
        }
        if let Some(file) = get("web_identity_token_file") {
            return Ok(Origin::WebIdentity { role_arn, token_file: file.into(), session_name, sts_url });
        }
        let source = match (get("source_profile"), get("credential_source")) {
            // A profile that is its own source: its keys assume its role.
            (Some(s), _) if s == name => self
                .keys(name, p)?
                .ok_or_else(|| self.field(name, "aws_access_key_id", "set (the profile is its own source_profile)"))?,
            (Some(s), _) => self.resolve(&s, visited)?.ok_or_else(|| {
                self.field(&s, "aws_access_key_id", "set, or another way to credentials (it is a source_profile)")
            })?,
            (None, Some(c)) => self.credential_source(name, &c)?,
            (None, None) => {
                let expected = "beside role_arn: source_profile, credential_source or web_identity_token_file";
                return Err(self.field(name, "source_profile", expected));
            }
        };
        let external_id = get("external_id");
        let profile = name.to_string();
        Ok(Origin::AssumeRole {
            profile,
            role_arn,
            session_name,
            external_id,
            sts_url,
            region,
            source: Box::new(source),
        })
    }

    /// `credential_source`: `Environment` (the standard key variables) or `Ec2InstanceMetadata`.
    fn credential_source(&self, name: &str, source: &str) -> Result<Origin, ProfileError> {
        let var = |k: &str| (self.var)(k).filter(|v| !v.trim().is_empty());
        match source {
            "Environment" => {
                let key_id = var("AWS_ACCESS_KEY_ID");
                let secret = var("AWS_SECRET_ACCESS_KEY");
                let (Some(key_id), Some(secret)) = (key_id, secret) else {
                    let expected = "Environment only with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY set";
                    return Err(self.field(name, "credential_source", expected));
                };
                crate::secret::remember(&secret);
                let token = var("AWS_SESSION_TOKEN").inspect(|t| crate::secret::remember(t));
                Ok(Origin::Keys { key_id, secret, token, from: KeysFrom::Variables })
            }
            "Ec2InstanceMetadata" => Ok(Origin::InstanceProfile {
                imds_url: var("AWS_EC2_METADATA_SERVICE_ENDPOINT").unwrap_or_else(|| "http://169.254.169.254".into()),
            }),
            "EcsContainer" => match super::origin::Container::choose(&var) {
                Ok(Some(c)) => Ok(Origin::Container(c)),
                Ok(None) => {
                    let expected = "EcsContainer only with AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or _FULL_URI set";
                    Err(self.field(name, "credential_source", expected))
                }
                Err(e) => Err(ProfileError::Container(e)),
            },
            _ => Err(self.field(name, "credential_source", "Environment, Ec2InstanceMetadata or EcsContainer")),
        }
    }

    /// The IAM Identity Center role: an `sso_session` section's start URL and
    /// region (the token cached under the session's name), or the older
    /// properties on the profile itself (cached under the start URL).
    fn sso(&self, name: &str, p: &Properties) -> Result<SsoRole, ProfileError> {
        let need = |k: &'static str, from: &Properties| {
            from.get(k).filter(|v| !v.is_empty()).cloned().ok_or_else(|| self.field(name, k, "set for an SSO profile"))
        };
        let (cache_key, start_url, sso_region, refreshable) = match p.get("sso_session").filter(|v| !v.is_empty()) {
            Some(session) => {
                let s = self.files.sso_sessions.get(session).ok_or_else(|| {
                    self.field(name, "sso_session", format!("the name of an [sso-session {session}] section"))
                })?;
                (session.clone(), need("sso_start_url", s)?, need("sso_region", s)?, true)
            }
            None => {
                let url = need("sso_start_url", p)?;
                (url.clone(), url, need("sso_region", p)?, false)
            }
        };
        use sha1::Digest;
        let file = format!("{}.json", hex::encode(sha1::Sha1::digest(cache_key.as_bytes())));
        let portal_url = (self.var)("AWS_ENDPOINT_URL_SSO")
            .unwrap_or_else(|| format!("https://portal.sso.{sso_region}.amazonaws.com"));
        Ok(SsoRole {
            profile: name.to_string(),
            start_url,
            account_id: need("sso_account_id", p)?,
            role_name: need("sso_role_name", p)?,
            token_file: self.home.join(".aws/sso/cache").join(file),
            portal_url,
            oidc_url: refreshable.then(|| {
                (self.var)("AWS_ENDPOINT_URL_SSO_OIDC")
                    .unwrap_or_else(|| format!("https://oidc.{sso_region}.amazonaws.com"))
            }),
        })
    }

    /// The profile's keys; `None` when it has none. The secret and token are remembered as secrets.
    fn keys(&self, name: &str, p: &Properties) -> Result<Option<Origin>, ProfileError> {
        let get = |k: &str| p.get(k).filter(|v| !v.is_empty()).cloned();
        let Some(key_id) = get("aws_access_key_id") else { return Ok(None) };
        let secret = get("aws_secret_access_key")
            .ok_or_else(|| self.field(name, "aws_secret_access_key", "set beside aws_access_key_id"))?;
        crate::secret::remember(&secret);
        let token = get("aws_session_token").inspect(|t| crate::secret::remember(t));
        Ok(Some(Origin::Keys { key_id, secret, token, from: KeysFrom::Profile(name.to_string()) }))
    }

    fn field(&self, profile: &str, field: &'static str, expected: impl Into<String>) -> ProfileError {
        ProfileError::Field {
            profile: profile.to_string(),
            field,
            expected: expected.into(),
            config: self.files.config.display().to_string(),
            credentials: self.files.credentials.display().to_string(),
        }
    }
}

impl Files {
    /// Both files; one that does not exist reads as empty.
    fn read(config: PathBuf, credentials: PathBuf) -> Result<Files, ProfileError> {
        let text = |what: &'static str, path: &Path| match std::fs::read_to_string(path) {
            Ok(t) => Ok(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(source) => Err(ProfileError::Read { what, path: path.display().to_string(), source }),
        };
        let mut files = Files { profiles: HashMap::new(), sso_sessions: HashMap::new(), ..Files::default() };
        for (section, props) in sections(&text("config", &config)?) {
            let section = section.trim();
            if let Some(n) = section.strip_prefix("profile ").or_else(|| section.strip_prefix("profile\t")) {
                files.profiles.entry(n.trim().to_string()).or_default().extend(props);
            } else if let Some(n) = section.strip_prefix("sso-session ") {
                files.sso_sessions.entry(n.trim().to_string()).or_default().extend(props);
            } else if section == "default" {
                files.profiles.entry(section.to_string()).or_default().extend(props);
            }
            // Other sections (`[services …]`, or a bare name the config file does not use) are not profiles.
        }
        for (section, props) in sections(&text("credentials", &credentials)?) {
            files.profiles.entry(section.trim().to_string()).or_default().extend(props);
        }
        (files.config, files.credentials) = (config, credentials);
        Ok(files)
    }
}

/// The sections of one file in order: `[NAME]` and its `key = value` lines.
/// Full-line comments start with `#` or `;`; an inline one needs whitespace
/// before it; indented lines (sub-properties, continued values) are not
/// credentials and are skipped.
fn sections(text: &str) -> Vec<(String, Properties)> {
    let mut out: Vec<(String, Properties)> = Vec::new();
    for line in text.lines() {
        if line.starts_with([' ', '\t']) {
            continue;
        }
        let line = strip_comment(line).trim();
        if line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            out.push((name.to_string(), Properties::new()));
        } else if let (Some((k, v)), Some((_, props))) = (line.split_once('='), out.last_mut()) {
            props.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    out
}

/// `line` up to a comment: a whole line from `#`/`;`, or one after whitespace.
fn strip_comment(line: &str) -> &str {
    if line.trim_start().starts_with(['#', ';']) {
        return "";
    }
    let cut = line.char_indices().find(|&(i, c)| (c == '#' || c == ';') && line[..i].ends_with([' ', '\t']));
    cut.map_or(line, |(i, _)| &line[..i])
}

/// A role to assume, as a profile names it.
pub(super) struct Role<'a> {
    pub role_arn: &'a str,
    pub session_name: &'a str,
    pub external_id: Option<&'a str>,
    pub sts_url: &'a str,
    /// The region the request is signed for (and STS's regional endpoint is in).
    pub region: &'a str,
}

/// STS `AssumeRole`: a form POST signed with the source's credentials (service `sts`).
pub(super) async fn assume_role(
    http: &reqwest::Client,
    role: &Role<'_>,
    source: &Identity,
    now_ms: i64,
) -> Result<Fetched, FetchError> {
    let mut form = vec![
        ("Action", "AssumeRole"),
        ("Version", "2011-06-15"),
        ("RoleArn", role.role_arn),
        ("RoleSessionName", role.session_name),
    ];
    form.extend(role.external_id.map(|e| ("ExternalId", e)));
    sts_call(http, role.sts_url, &form, Some((source, role.region, now_ms))).await
}

/// What a `credential_process` prints (the SDKs' documented JSON, `Version` 1).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ProcessOutput {
    version: u32,
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
    /// ISO 8601; absent: the credentials do not expire.
    expiration: Option<String>,
}

/// Most a `credential_process` may print: its JSON is under 4 KiB (a
/// session token is about 1 KiB), so more is not credentials — and reading
/// it whole would let a runaway program fill the agent's memory.
const PROCESS_STDOUT_MAX: usize = 64 * 1024;
/// Bytes of its error output kept, the last ones (its last line is quoted).
const PROCESS_STDERR_KEPT: usize = 4 * 1024;

/// Run a profile's `credential_process` (`sh -c`, as the SDKs do on Unix) and read its JSON.
pub(super) async fn process(command: &str) -> Result<Fetched, FetchError> {
    let program = command.split_whitespace().next().unwrap_or_default().to_string();
    let failed = |why: String| FetchError::ProcessFailed { program: program.clone(), why };
    let (status, stdout, stderr) = match tokio::time::timeout(PROCESS_TIMEOUT, run_bounded(command)).await {
        Err(_) => return Err(failed(format!("no answer in {} s", PROCESS_TIMEOUT.as_secs()))),
        Ok(Err(source)) => return Err(FetchError::Process { program, source }),
        Ok(Ok(Ran::TooMuch)) => {
            return Err(failed(format!(
                "it printed more than {} KiB, which is not credentials",
                PROCESS_STDOUT_MAX / 1024
            )));
        }
        Ok(Ok(Ran::Exited { status, stdout, stderr })) => (status, stdout, stderr),
    };
    if !status.success() {
        let stderr = String::from_utf8_lossy(&stderr);
        let last: String =
            stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").chars().take(200).collect();
        return Err(failed(format!("{status}: {}", last.trim())));
    }
    let o: ProcessOutput =
        serde_json::from_slice(&stdout).map_err(|e| failed(format!("its output is not the credentials JSON ({e})")))?;
    if o.version != 1 {
        return Err(failed(format!("its output's Version is {}, where 1 is read", o.version)));
    }
    crate::secret::remember(&o.secret_access_key);
    let expires_s = match o.expiration.as_deref() {
        Some(iso) => Some(unix_s(iso).ok_or_else(|| failed(format!("Expiration `{iso}` is not ISO 8601")))?),
        None => None,
    };
    Ok(Fetched { key_id: o.access_key_id, secret: o.secret_access_key, token: o.session_token, expires_s })
}

/// How a bounded run of a `credential_process` ended.
enum Ran {
    /// It exited: its status, its whole output, the last [`PROCESS_STDERR_KEPT`] bytes of its errors.
    Exited { status: std::process::ExitStatus, stdout: Vec<u8>, stderr: Vec<u8> },
    /// It printed past [`PROCESS_STDOUT_MAX`]; it was killed.
    TooMuch,
}

/// Run `command` reading at most [`PROCESS_STDOUT_MAX`] bytes of its output
/// and keeping the tail of its errors (drained to the end, so a chatty
/// program never blocks on a full pipe). The child dies with the future.
async fn run_bounded(command: &str) -> std::io::Result<Ran> {
    use std::process::Stdio;
    use tokio::io::AsyncReadExt;
    let mut child = tokio::process::Command::new("sh")
        .args(["-c", command])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let (Some(out), Some(mut err)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(std::io::Error::other("the process's pipes were not opened"));
    };
    // Errors drained beside the output, so a program filling the error pipe
    // never blocks; one future, so a timeout drops (and kills) it all.
    let drain = async move {
        let (mut kept, mut chunk) = (Vec::new(), [0u8; 4096]);
        while let Ok(n @ 1..) = err.read(&mut chunk).await {
            kept.extend_from_slice(&chunk[..n]);
            let excess = kept.len().saturating_sub(PROCESS_STDERR_KEPT);
            kept.drain(..excess);
        }
        kept
    };
    tokio::pin!(drain);
    let (mut stdout, mut limited) = (Vec::new(), out.take(PROCESS_STDOUT_MAX as u64 + 1));
    let read = limited.read_to_end(&mut stdout);
    tokio::pin!(read);
    let drained = tokio::select! {
        read = &mut read => { read?; None }
        kept = &mut drain => { (&mut read).await?; Some(kept) }
    };
    if stdout.len() > PROCESS_STDOUT_MAX {
        child.kill().await?;
        return Ok(Ran::TooMuch);
    }
    let (status, stderr) = match drained {
        Some(kept) => (child.wait().await?, kept),
        None => {
            let (status, kept) = tokio::join!(child.wait(), &mut drain);
            (status?, kept)
        }
    };
    Ok(Ran::Exited { status, stdout, stderr })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: Vec<(&'static str, String)>) -> impl Fn(&str) -> Option<String> {
        move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
    }

    /// The two files in a fresh folder, and an environment pointing at them (and at it as `HOME`).
    fn files(config: &str, credentials: &str) -> (tempfile::TempDir, Vec<(&'static str, String)>) {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("config"), config).unwrap();
        std::fs::write(d.path().join("credentials"), credentials).unwrap();
        let p = |f: &str| d.path().join(f).display().to_string();
        let vars =
            vec![("AWS_CONFIG_FILE", p("config")), ("AWS_SHARED_CREDENTIALS_FILE", p("credentials")), ("HOME", p(""))];
        (d, vars)
    }

    const CONFIG: &str = "# a comment\n[default]\nregion = eu-west-1\ns3 =\n  max_concurrent_requests = 20\n\n\
        [profile keys]\naws_access_key_id = AKIDCONFIG\naws_secret_access_key = from-config\n\
        [profile reader]\nrole_arn = arn:aws:iam::123456789012:role/reader ; inline comment\nsource_profile = keys\nexternal_id = ext-1\n\
        [profile sso]\nsso_session = corp\nsso_account_id = 123456789012\nsso_role_name = ReadOnly\n\
        [sso-session corp]\nsso_start_url = https://corp.awsapps.com/start\nsso_region = us-east-1\n\
        [profile legacy-sso]\nsso_start_url = https://old.awsapps.com/start\nsso_region = eu-central-1\nsso_account_id = 1\nsso_role_name = R\n\
        [profile process]\ncredential_process = /opt/bin/creds --profile x\n\
        [profile loop-a]\nrole_arn = a\nsource_profile = loop-b\n[profile loop-b]\nrole_arn = b\nsource_profile = loop-a\n\
        [profile lonely-role]\nrole_arn = r\n[profile mfa]\nrole_arn = r\nsource_profile = keys\nmfa_serial = arn:aws:iam::1:mfa/me\n";
    const CREDENTIALS: &str = "[keys]\naws_access_key_id = AKIDCREDS\naws_secret_access_key = from-credentials\n";

    fn chosen(name: Option<&str>) -> Result<Option<Origin>, ProfileError> {
        let (_d, mut vars) = files(CONFIG, CREDENTIALS);
        if let Some(n) = name {
            vars.push(("AWS_PROFILE", n.to_string()));
        }
        origin(&env(vars), "eu-west-1")
    }

    #[test]
    fn a_profiles_keys_come_from_the_credentials_file_over_the_config_file() {
        // `default` has only a region: not credentials, so the next origin is tried.
        assert!(matches!(chosen(None), Ok(None)));
        match chosen(Some("keys")) {
            Ok(Some(Origin::Keys { key_id, secret, from: KeysFrom::Profile(p), .. })) => {
                assert_eq!((key_id.as_str(), secret.as_str(), p.as_str()), ("AKIDCREDS", "from-credentials", "keys"));
            }
            other => panic!("{other:?}"),
        }
        let e = chosen(Some("absent")).unwrap_err().to_string();
        assert!(e.contains("`absent`") && e.contains("/config") && e.contains("/credentials"), "{e}");
    }

    #[test]
    fn a_role_is_assumed_with_its_source_profiles_keys_and_loops_are_refused() {
        match chosen(Some("reader")) {
            Ok(Some(Origin::AssumeRole { role_arn, external_id, sts_url, source, .. })) => {
                assert_eq!(role_arn, "arn:aws:iam::123456789012:role/reader", "the inline comment is not the ARN");
                assert_eq!(
                    (external_id.as_deref(), sts_url.as_str()),
                    (Some("ext-1"), "https://sts.eu-west-1.amazonaws.com")
                );
                assert!(matches!(*source, Origin::Keys { ref key_id, .. } if key_id == "AKIDCREDS"), "{source:?}");
            }
            other => panic!("{other:?}"),
        }
        let e = chosen(Some("loop-a")).unwrap_err().to_string();
        assert!(e.contains("loop-a → loop-b → loop-a"), "{e}");
        let e = chosen(Some("mfa")).unwrap_err().to_string();
        assert!(e.contains("`mfa_serial` must be absent") && e.contains("export-credentials"), "{e}");
        let e = chosen(Some("lonely-role")).unwrap_err().to_string();
        assert!(
            e.contains("`lonely-role`") && e.contains("source_profile, credential_source or web_identity_token_file"),
            "{e}"
        );
    }

    #[test]
    fn sso_profiles_find_their_cached_token_by_session_or_start_url_and_processes_are_named() {
        let sso = |name| match chosen(Some(name)) {
            Ok(Some(Origin::Sso(r))) => r,
            other => panic!("{other:?}"),
        };
        let r = sso("sso");
        assert_eq!((r.account_id.as_str(), r.role_name.as_str()), ("123456789012", "ReadOnly"));
        assert_eq!(r.portal_url, "https://portal.sso.us-east-1.amazonaws.com");
        // Only the sso-session form's token can be refreshed.
        assert_eq!(r.oidc_url.as_deref(), Some("https://oidc.us-east-1.amazonaws.com"));
        // The CLI's cache file names: SHA-1 of the session's name, or of the start URL without a session.
        let name = |r: &SsoRole| r.token_file.file_name().unwrap().to_string_lossy().to_string();
        assert_eq!(name(&r), format!("{}.json", hex::encode(<sha1::Sha1 as sha1::Digest>::digest(b"corp"))));
        let old = sso("legacy-sso");
        assert_eq!(old.oidc_url, None);
        let url = b"https://old.awsapps.com/start";
        assert_eq!(name(&old), format!("{}.json", hex::encode(<sha1::Sha1 as sha1::Digest>::digest(url))));
        assert!(old.token_file.ends_with(Path::new(".aws/sso/cache").join(name(&old))));
        assert!(
            matches!(chosen(Some("process")), Ok(Some(Origin::Process { command, .. })) if command == "/opt/bin/creds --profile x")
        );
    }

    #[test]
    fn missing_files_read_as_empty_and_a_key_without_its_secret_names_the_field() {
        let vars = vec![
            ("AWS_CONFIG_FILE", "/nonexistent/c".to_string()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/k".into()),
        ];
        assert!(matches!(origin(&env(vars), "eu-west-1"), Ok(None)));
        let (_d, mut vars) = files("", "[default]\naws_access_key_id = AKID\n");
        vars.push(("AWS_PROFILE", "default".into()));
        let e = origin(&env(vars), "eu-west-1").unwrap_err().to_string();
        assert!(
            e.contains("`aws_secret_access_key` must be set beside aws_access_key_id") && e.contains("`default`"),
            "{e}"
        );
    }

    fn run(command: &str) -> Result<Fetched, FetchError> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(process(command))
    }

    #[test]
    fn a_process_printing_past_its_bound_is_refused_and_a_flood_of_errors_keeps_its_last_line() {
        let started = std::time::Instant::now();
        // An endless program: refused at the bound, not read until memory runs out (or the 60-s timeout).
        match run("yes AKIDAKIDAKIDAKID") {
            Err(FetchError::ProcessFailed { program, why }) => {
                assert_eq!(program, "yes");
                assert!(why.contains("more than 64 KiB"), "{why}");
            }
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("credentials from an endless program"),
        }
        // 1 MB of errors, then the line that says why: drained, never blocking the program.
        match run("head -c 1000000 /dev/zero | tr '\\0' x >&2; echo >&2; echo 'vault sealed' >&2; exit 3") {
            Err(FetchError::ProcessFailed { program, why }) => {
                assert_eq!(program, "head");
                assert!(why.ends_with("vault sealed") && why.contains("exit status: 3"), "{why}");
            }
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("credentials from a failing program"),
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "{:?}", started.elapsed());
        // Credentials after a noisy error stream still come through.
        let ok = run("head -c 200000 /dev/zero >&2; echo '{\"Version\": 1, \"AccessKeyId\": \"AKIDP\", \"SecretAccessKey\": \"s\"}'")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((ok.key_id.as_str(), ok.expires_s), ("AKIDP", None));
    }
}
