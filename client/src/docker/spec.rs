//! What a person types, checked before anything is created: env lines,
//! `-v`/`--mount`/`--tmpfs` mounts, `-p` ports and `--restart` policies.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::invalid;
use crate::Error;

/// Checks one `KEY=VALUE` (or `KEY`) environment entry as Docker does.
///
/// # Errors
/// InvalidArgument for an empty name or one with whitespace.
pub fn check_env(entry: &str) -> Result<(), Error> {
    let key = entry.split_once('=').map_or(entry, |(k, _)| k);
    if key.is_empty() {
        return Err(invalid(format!("invalid environment variable: {entry}")));
    }
    if key.chars().any(char::is_whitespace) {
        return Err(invalid(format!(
            "invalid environment variable: variable '{key}' contains whitespaces"
        )));
    }
    Ok(())
}

/// Resolves `-e KEY` (no `=`) from this process's environment, as the
/// docker CLI does; None when it is not set (the variable is then left
/// out).
pub fn resolve_env(entry: &str) -> Option<String> {
    if entry.contains('=') {
        return Some(entry.to_owned());
    }
    std::env::var(entry).ok().map(|v| format!("{entry}={v}"))
}

/// Parses an `--env-file`: one entry per line, `#` comments and blank
/// lines skipped.
///
/// # Errors
/// InvalidArgument naming the line of an entry without a valid name.
pub fn parse_env_file(text: &str) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        check_env(line).map_err(|e| invalid(format!("env file line {}: {e}", n + 1)))?;
        out.extend(resolve_env(line));
    }
    Ok(out)
}

/// What kind of mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountType {
    /// A named (or anonymous) volume under the daemon's root.
    Volume,
    /// A host path.
    Bind,
    /// A tmpfs.
    Tmpfs,
}

/// One mount of a container, as Docker's inspect shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MountSpec {
    /// volume, bind or tmpfs.
    #[serde(rename = "Type")]
    pub kind: MountType,
    /// The volume's name (volumes only).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Host path (for a volume, its `_data` directory once resolved).
    #[serde(default)]
    pub source: String,
    /// Path in the container.
    pub destination: String,
    /// Writable.
    #[serde(rename = "RW")]
    pub rw: bool,
    /// Extra mount options (tmpfs size and mode).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

fn volume_name_ok(name: &str) -> bool {
    name.len() >= 2 && super::names::valid_name(name)
}

fn check_destination(dst: &str, spec: &str) -> Result<(), Error> {
    if !dst.starts_with('/') {
        return Err(invalid(format!(
            "invalid volume specification: '{spec}': invalid mount config: mount path must be absolute"
        )));
    }
    if dst == "/" {
        return Err(invalid(format!(
            "invalid volume specification: '{spec}': invalid mount config: destination can't be '/'"
        )));
    }
    Ok(())
}

impl MountSpec {
    /// Parses `-v SRC:DST[:OPTS]` or `-v DST` (an anonymous volume).
    ///
    /// # Errors
    /// InvalidArgument quoting the spec.
    pub fn parse_volume(spec: &str) -> Result<MountSpec, Error> {
        let parts: Vec<&str> = spec.split(':').collect();
        let bad = || invalid(format!("invalid volume specification: '{spec}'"));
        let (src, dst, opts) = match parts.as_slice() {
            [dst] => ("", *dst, ""),
            [src, dst] => (*src, *dst, ""),
            [src, dst, opts] => (*src, *dst, *opts),
            _ => return Err(bad()),
        };
        if dst.is_empty() {
            return Err(bad());
        }
        check_destination(dst, spec)?;
        let mut rw = true;
        for o in opts.split(',').filter(|o| !o.is_empty()) {
            match o {
                "ro" => rw = false,
                "rw" => rw = true,
                "z" | "Z" | "nocopy" | "rprivate" | "private" | "rslave" | "slave" | "rshared"
                | "shared" => {}
                _ => return Err(invalid(format!("invalid mode: {o}"))),
            }
        }
        let (kind, name, source) = if src.starts_with('/') {
            (MountType::Bind, String::new(), src.to_owned())
        } else if src.is_empty() {
            (MountType::Volume, String::new(), String::new())
        } else if volume_name_ok(src) {
            (MountType::Volume, src.to_owned(), String::new())
        } else {
            return Err(invalid(format!(
                "invalid volume specification: '{spec}': \"{src}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path"
            )));
        };
        Ok(MountSpec {
            kind,
            name,
            source,
            destination: dst.to_owned(),
            rw,
            options: Vec::new(),
        })
    }

    /// Parses `--mount type=…,source=…,target=…[,readonly][,tmpfs-size=…]`.
    ///
    /// # Errors
    /// InvalidArgument naming the bad field.
    pub fn parse_mount(spec: &str) -> Result<MountSpec, Error> {
        let mut kind = MountType::Volume;
        let (mut src, mut dst, mut rw) = (String::new(), String::new(), true);
        let mut options = Vec::new();
        for field in spec.split(',') {
            let (k, v) = field.split_once('=').unwrap_or((field, ""));
            match k {
                "type" => {
                    kind = match v {
                        "volume" => MountType::Volume,
                        "bind" => MountType::Bind,
                        "tmpfs" => MountType::Tmpfs,
                        _ => {
                            return Err(invalid(format!(
                                "invalid mount type {v:?}: use volume, bind or tmpfs"
                            )))
                        }
                    }
                }
                "source" | "src" => src = v.to_owned(),
                "target" | "destination" | "dst" => dst = v.to_owned(),
                "readonly" | "ro" => {
                    rw = match v {
                        "" | "true" | "1" => false,
                        "false" | "0" => true,
                        _ => return Err(invalid(format!("invalid value for {k}: {v}"))),
                    }
                }
                "tmpfs-size" => {
                    let size = hull_logs::parse_size(v).map_err(|e| invalid(e.to_string()))?;
                    options.push(format!("size={size}"));
                }
                "tmpfs-mode" => {
                    u32::from_str_radix(v, 8)
                        .map_err(|_| invalid(format!("invalid tmpfs-mode {v:?}")))?;
                    options.push(format!("mode={v}"));
                }
                "volume-nocopy" | "bind-propagation" | "consistency" => {}
                _ => return Err(invalid(format!("unexpected key '{k}' in '{field}'"))),
            }
        }
        if dst.is_empty() {
            return Err(invalid(format!(
                "invalid mount {spec:?}: target is required"
            )));
        }
        check_destination(&dst, spec)?;
        let (name, source) = match kind {
            MountType::Bind => {
                if !src.starts_with('/') {
                    return Err(invalid(format!(
                        "invalid mount {spec:?}: a bind source must be an absolute path"
                    )));
                }
                if !Path::new(&src).exists() {
                    return Err(invalid(format!("invalid mount config for type \"bind\": bind source path does not exist: {src}")));
                }
                (String::new(), src)
            }
            MountType::Volume => {
                if !src.is_empty() && !volume_name_ok(&src) {
                    return Err(invalid(format!("invalid volume name {src:?}")));
                }
                (src, String::new())
            }
            MountType::Tmpfs => {
                if !src.is_empty() {
                    return Err(invalid(
                        "invalid mount config for type \"tmpfs\": source must be empty",
                    ));
                }
                (String::new(), String::new())
            }
        };
        Ok(MountSpec {
            kind,
            name,
            source,
            destination: dst,
            rw,
            options,
        })
    }

    /// Parses `--tmpfs /path[:opts]`.
    ///
    /// # Errors
    /// InvalidArgument for a relative path.
    pub fn parse_tmpfs(spec: &str) -> Result<MountSpec, Error> {
        let (dst, opts) = spec.split_once(':').unwrap_or((spec, ""));
        check_destination(dst, spec)?;
        let mut rw = true;
        let mut options = Vec::new();
        for o in opts.split(',').filter(|o| !o.is_empty()) {
            match o {
                "ro" => rw = false,
                "rw" => rw = true,
                o => options.push(o.to_owned()),
            }
        }
        Ok(MountSpec {
            kind: MountType::Tmpfs,
            name: String::new(),
            source: String::new(),
            destination: dst.to_owned(),
            rw,
            options,
        })
    }
}

/// One published port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PortSpec {
    /// Host address to listen on; empty for every address.
    pub host_ip: String,
    /// Host port; 0 until one is chosen.
    pub host_port: u16,
    /// Port in the container.
    pub container_port: u16,
    /// tcp, udp or sctp.
    pub protocol: String,
}

fn port(text: &str, spec: &str) -> Result<u16, Error> {
    text.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
        invalid(format!(
            "invalid port {text:?} in '{spec}': must be 1-65535"
        ))
    })
}

impl PortSpec {
    /// Parses `-p [IP:][HOSTPORT:]CONTAINERPORT[/PROTO]`.
    ///
    /// # Errors
    /// InvalidArgument quoting the spec.
    pub fn parse(spec: &str) -> Result<PortSpec, Error> {
        let (addr, protocol) = spec.rsplit_once('/').unwrap_or((spec, "tcp"));
        if !matches!(protocol, "tcp" | "udp" | "sctp") {
            return Err(invalid(format!("invalid proto '{protocol}' in '{spec}'")));
        }
        // An IPv6 host address comes in brackets.
        let (host_ip, rest) = match addr.strip_prefix('[') {
            Some(r) => {
                let (ip, rest) = r
                    .split_once("]:")
                    .ok_or_else(|| invalid(format!("invalid port specification: '{spec}'")))?;
                (ip.to_owned(), rest)
            }
            None => match addr.matches(':').count() {
                0 | 1 => (String::new(), addr),
                2 => {
                    let (ip, rest) = addr.split_once(':').unwrap_or(("", addr));
                    (ip.to_owned(), rest)
                }
                _ => return Err(invalid(format!("invalid port specification: '{spec}'"))),
            },
        };
        if !host_ip.is_empty() && host_ip.parse::<std::net::IpAddr>().is_err() {
            return Err(invalid(format!(
                "invalid IP address {host_ip:?} in '{spec}'"
            )));
        }
        let (host, container) = match rest.split_once(':') {
            Some((h, c)) => (h, c),
            None => ("", rest),
        };
        Ok(PortSpec {
            host_ip,
            host_port: if host.is_empty() {
                0
            } else {
                port(host, spec)?
            },
            container_port: port(container, spec)?,
            protocol: protocol.to_owned(),
        })
    }
}

/// When a container is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestartPolicy {
    /// Never.
    #[default]
    No,
    /// Whenever it stops, unless stopped by a person.
    Always,
    /// As Always, and not after a daemon restart once stopped by a person.
    UnlessStopped,
    /// When it exits non-zero, at most N times (0: no limit).
    OnFailure(u32),
}

impl RestartPolicy {
    /// Parses `--restart no|always|unless-stopped|on-failure[:N]`.
    ///
    /// # Errors
    /// InvalidArgument for anything else.
    pub fn parse(text: &str) -> Result<RestartPolicy, Error> {
        let (name, max) = text.split_once(':').unwrap_or((text, ""));
        let policy = match name {
            "" | "no" if max.is_empty() => RestartPolicy::No,
            "always" if max.is_empty() => RestartPolicy::Always,
            "unless-stopped" if max.is_empty() => RestartPolicy::UnlessStopped,
            "on-failure" => RestartPolicy::OnFailure(if max.is_empty() {
                0
            } else {
                max.parse().map_err(|_| {
                    invalid(format!(
                        "invalid restart policy {text:?}: maximum retry count must be a number"
                    ))
                })?
            }),
            _ => {
                return Err(invalid(format!(
                "invalid restart policy {text:?}: use no, always, unless-stopped or on-failure[:N]"
            )))
            }
        };
        Ok(policy)
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestartPolicy::No => f.write_str("no"),
            RestartPolicy::Always => f.write_str("always"),
            RestartPolicy::UnlessStopped => f.write_str("unless-stopped"),
            RestartPolicy::OnFailure(0) => f.write_str("on-failure"),
            RestartPolicy::OnFailure(n) => write!(f, "on-failure:{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_lines() {
        assert!(check_env("A=b c").is_ok());
        assert!(check_env("=x").is_err());
        assert!(check_env("A B=x").is_err());
        std::env::set_var("HULL_TEST_ENV_FILE", "v");
        let got = parse_env_file("# c\n\nA=1\n  HULL_TEST_ENV_FILE\nHULL_UNSET_X\n").unwrap();
        assert_eq!(got, ["A=1", "HULL_TEST_ENV_FILE=v"]);
        let e = parse_env_file("A=1\nbad key=2\n").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
    }

    #[test]
    fn volume_specs() {
        let m = MountSpec::parse_volume("data:/var/lib/x").unwrap();
        assert_eq!(
            (m.kind, m.name.as_str(), m.rw),
            (MountType::Volume, "data", true)
        );
        let m = MountSpec::parse_volume("/srv:/x:ro").unwrap();
        assert_eq!(
            (m.kind, m.source.as_str(), m.rw),
            (MountType::Bind, "/srv", false)
        );
        let m = MountSpec::parse_volume("/anon").unwrap();
        assert_eq!((m.kind, m.name.as_str()), (MountType::Volume, ""));
        for bad in ["x:rel", "a:b:c:d", "/a:/b:rx", "bad$name:/x", "/a:"] {
            assert!(MountSpec::parse_volume(bad).is_err(), "{bad}");
        }
        let m = MountSpec::parse_mount("type=tmpfs,target=/t,tmpfs-size=1m").unwrap();
        assert_eq!(m.options, ["size=1048576"]);
        let m = MountSpec::parse_mount("type=bind,src=/tmp,dst=/t,readonly").unwrap();
        assert!(!m.rw);
        assert!(MountSpec::parse_mount("type=bind,src=/nonexistent-hull,dst=/t").is_err());
        assert!(MountSpec::parse_mount("type=nfs,dst=/t").is_err());
        assert!(MountSpec::parse_tmpfs("/run:size=64k").is_ok());
    }

    #[test]
    fn port_specs() {
        let p = PortSpec::parse("127.0.0.1:8080:80").unwrap();
        assert_eq!(
            (p.host_ip.as_str(), p.host_port, p.container_port),
            ("127.0.0.1", 8080, 80)
        );
        let p = PortSpec::parse("53/udp").unwrap();
        assert_eq!(
            (p.host_port, p.container_port, p.protocol.as_str()),
            (0, 53, "udp")
        );
        let p = PortSpec::parse("[::1]:9000:90").unwrap();
        assert_eq!(p.host_ip, "::1");
        assert_eq!(PortSpec::parse("127.0.0.1::80").unwrap().host_port, 0);
        for bad in [
            "0:80",
            "8080:70000",
            "abc",
            "1.2.3:80:80",
            "80/icmp",
            "a:b:c:d",
        ] {
            assert!(PortSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn restart_policies() {
        assert_eq!(
            RestartPolicy::parse("on-failure:3").unwrap(),
            RestartPolicy::OnFailure(3)
        );
        assert_eq!(
            RestartPolicy::parse("always").unwrap().to_string(),
            "always"
        );
        assert!(RestartPolicy::parse("sometimes").is_err());
        assert!(RestartPolicy::parse("always:2").is_err());
        assert!(RestartPolicy::parse("on-failure:x").is_err());
    }
}
