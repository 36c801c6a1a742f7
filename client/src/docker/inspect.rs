//! `inspect`: a container as Docker's API describes it (the field names
//! scripts use: `.Id`, `.State.Status`, `.NetworkSettings.IPAddress`,
//! `.LogPath`, …), and Go templates over it (`--format`), rendered by
//! gtmpl with Docker's `json`, `join`, `lower` and `upper` functions.

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use gtmpl::{FuncError, Value as Tv};
use serde_json::{json, Map, Value};

use super::list::State;
use super::spec::RestartPolicy;
use super::volumes::mounts_of;
use super::{invalid, labels, Docker};
use crate::Error;

/// How `inspect` prints.
#[derive(Debug, Clone)]
pub enum InspectFormat {
    /// Docker's JSON array.
    Json,
    /// A Go template applied to each object.
    Template(String),
}

fn rfc3339(t: Option<SystemTime>) -> String {
    t.map(|t| humantime::format_rfc3339_nanos(t).to_string())
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".into())
}

fn to_template(v: &Value) -> Tv {
    match v {
        Value::Null => Tv::Nil,
        Value::Bool(b) => Tv::Bool(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Tv::from(i)
            } else if let Some(u) = n.as_u64() {
                Tv::from(u)
            } else {
                Tv::from(n.as_f64().unwrap_or(0.0))
            }
        }
        Value::String(s) => Tv::String(s.clone()),
        Value::Array(a) => Tv::Array(a.iter().map(to_template).collect()),
        Value::Object(o) => Tv::Map(
            o.iter()
                .map(|(k, v)| (k.clone(), to_template(v)))
                .collect::<HashMap<_, _>>(),
        ),
    }
}

fn from_template(v: &Tv) -> Value {
    match v {
        Tv::NoValue | Tv::Nil | Tv::Function(_) => Value::Null,
        Tv::Bool(b) => Value::Bool(*b),
        Tv::String(s) => Value::String(s.clone()),
        Tv::Number(n) => {
            let text = n.to_string();
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        }
        Tv::Array(a) => Value::Array(a.iter().map(from_template).collect()),
        Tv::Object(o) | Tv::Map(o) => {
            let sorted: BTreeMap<_, _> = o
                .iter()
                .map(|(k, v)| (k.clone(), from_template(v)))
                .collect();
            Value::Object(sorted.into_iter().collect())
        }
    }
}

fn func_json(args: &[Tv]) -> Result<Tv, FuncError> {
    let v = args
        .first()
        .ok_or_else(|| FuncError::ExactlyXArgs("json".into(), 1))?;
    Ok(Tv::String(
        serde_json::to_string(&from_template(v)).unwrap_or_default(),
    ))
}

fn text(v: &Tv) -> String {
    match v {
        Tv::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn func_join(args: &[Tv]) -> Result<Tv, FuncError> {
    let (Some(Tv::Array(items)), Some(sep)) = (args.first(), args.get(1)) else {
        return Err(FuncError::ExactlyXArgs("join".into(), 2));
    };
    Ok(Tv::String(
        items.iter().map(text).collect::<Vec<_>>().join(&text(sep)),
    ))
}

fn func_lower(args: &[Tv]) -> Result<Tv, FuncError> {
    Ok(Tv::String(
        args.first().map(text).unwrap_or_default().to_lowercase(),
    ))
}

fn func_upper(args: &[Tv]) -> Result<Tv, FuncError> {
    Ok(Tv::String(
        args.first().map(text).unwrap_or_default().to_uppercase(),
    ))
}

/// Renders Go template `template` over `value`, as `docker inspect
/// --format` does.
///
/// # Errors
/// InvalidArgument for a template that does not parse or run.
pub fn render_template(template: &str, value: &Value) -> Result<String, Error> {
    let mut t = gtmpl::Template::default();
    t.add_funcs(&[
        ("json", func_json as gtmpl::Func),
        ("join", func_join as gtmpl::Func),
        ("lower", func_lower as gtmpl::Func),
        ("upper", func_upper as gtmpl::Func),
    ]);
    t.parse(template)
        .map_err(|e| invalid(format!("template parsing error: {e}")))?;
    t.render(&gtmpl::Context::from(to_template(value)))
        .map_err(|e| invalid(format!("template: {e}")))
}

impl Docker {
    /// Container `key` as Docker's inspect shows it.
    ///
    /// # Errors
    /// NotFound.
    pub async fn inspect(&self, key: &str) -> Result<Value, Error> {
        let s = self.summary_of(key).await?;
        let c = &s.record;
        let spec: Value = c
            .spec
            .as_ref()
            .and_then(|a| serde_json::from_slice(&a.value).ok())
            .unwrap_or(Value::Null);
        let process = &spec["process"];
        let l = &s.labels;
        let (pid, code, started, finished) = match &s.status {
            State::Running { pid, started } => (*pid, 0, *started, None),
            State::Paused { pid } => (*pid, 0, None, None),
            State::Exited { code, at } => (0, *code, None, *at),
            State::Created => (0, 0, None, None),
        };
        let policy = l
            .get(labels::RESTART_POLICY)
            .and_then(|p| RestartPolicy::parse(p).ok())
            .unwrap_or_default();
        let (policy_name, retries) = match policy {
            RestartPolicy::OnFailure(n) => ("on-failure".to_owned(), n),
            p => (p.to_string(), 0),
        };
        let ip = l.get(labels::IP_ADDRESS).cloned().unwrap_or_default();
        let mut ports = Map::new();
        for p in &s.ports {
            ports.insert(
                format!("{}/{}", p.container_port, p.protocol),
                json!([{ "HostIp": if p.host_ip.is_empty() { "0.0.0.0" } else { &p.host_ip }, "HostPort": p.host_port.to_string() }]),
            );
        }
        let network = l
            .get(labels::NETWORK)
            .cloned()
            .unwrap_or_else(|| "bridge".into());
        let mut networks = Map::new();
        if network != "none" {
            networks.insert(network.clone(), json!({ "IPAddress": ip }));
        }
        let user = match (&process["user"]["uid"], &process["user"]["gid"]) {
            (Value::Number(u), Value::Number(g))
                if u.as_u64() != Some(0) || g.as_u64() != Some(0) =>
            {
                format!("{u}:{g}")
            }
            _ => String::new(),
        };
        let args: Vec<String> = s.command.clone();
        let docker_labels: BTreeMap<&String, &String> = l
            .iter()
            .filter(|(k, _)| !k.starts_with("io.hull.") && !k.starts_with("containerd.io/"))
            .collect();
        let restart_count: u64 = l
            .get(labels::RESTART_COUNT)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        Ok(json!({
            "Id": s.id,
            "Created": rfc3339(Some(s.created)),
            "Path": args.first().cloned().unwrap_or_default(),
            "Args": args.iter().skip(1).collect::<Vec<_>>(),
            "State": {
                "Status": s.status.name(),
                "Running": matches!(s.status, State::Running { .. } | State::Paused { .. }),
                "Paused": matches!(s.status, State::Paused { .. }),
                "Restarting": false,
                "OOMKilled": false,
                "Dead": false,
                "Pid": pid,
                "ExitCode": code,
                "Error": "",
                "StartedAt": rfc3339(started),
                "FinishedAt": rfc3339(finished),
            },
            "Image": s.image,
            "Name": format!("/{}", s.name),
            "RestartCount": restart_count,
            "Driver": c.snapshotter,
            "Platform": "linux",
            "LogPath": l.get(labels::LOG_PATH).cloned().unwrap_or_default(),
            "HostConfig": {
                "RestartPolicy": { "Name": policy_name, "MaximumRetryCount": retries },
                "NetworkMode": network,
                "AutoRemove": l.get(labels::AUTO_REMOVE).is_some_and(|v| v == "true"),
                "ReadonlyRootfs": spec["root"]["readonly"].as_bool().unwrap_or(false),
                "LogConfig": { "Type": "json-file" },
            },
            "Mounts": mounts_of(l),
            "Config": {
                "Hostname": spec["hostname"].as_str().unwrap_or_default(),
                "User": user,
                "Env": process["env"],
                "Cmd": args,
                "Image": s.image,
                "WorkingDir": process["cwd"],
                "Tty": process["terminal"].as_bool().unwrap_or(false),
                "OpenStdin": l.get(labels::STDIN).is_some_and(|v| v == "true"),
                "Labels": docker_labels,
                "StopSignal": l.get(labels::STOP_SIGNAL).cloned().unwrap_or_else(|| "SIGTERM".into()),
            },
            "NetworkSettings": {
                "IPAddress": ip,
                "Ports": ports,
                "Networks": networks,
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_templates_over_inspect_fields() {
        let v = json!({"Id": "abc", "State": {"Status": "running", "Pid": 42}, "Args": ["a", "b"], "Config": {"Env": ["A=1"]}});
        assert_eq!(
            render_template("{{.Id}} {{.State.Status}} {{.State.Pid}}", &v).unwrap(),
            "abc running 42"
        );
        assert_eq!(
            render_template("{{json .Config}}", &v).unwrap(),
            r#"{"Env":["A=1"]}"#
        );
        assert_eq!(render_template("{{join .Args \",\"}}", &v).unwrap(), "a,b");
        assert_eq!(
            render_template("{{upper .State.Status}}", &v).unwrap(),
            "RUNNING"
        );
        assert!(render_template("{{.Id", &v).is_err());
    }
}
