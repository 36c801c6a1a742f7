//! ExecSync (a command in a running container, its output returned), and
//! the streaming calls (Exec, Attach, PortForward), which answer with a URL
//! of the streaming server where the client then speaks the kubelet's
//! streaming protocols.

use std::path::PathBuf;
use std::time::Duration;

use hull_proto::containerd::services::containers::v1::containers_server::Containers;
use hull_proto::containerd::services::containers::v1::GetContainerRequest;
use hull_proto::containerd::services::tasks::v1::tasks_server::Tasks;
use hull_proto::containerd::services::tasks::v1::{
    DeleteProcessRequest, ExecProcessRequest, StartRequest,
};
use hull_proto::errdefs::Kind;
use serde_json::{json, Value};
use tonic::Status;

use super::container::cri_state;
use super::{blocking, request, status_of, Cri};
use hull_proto::runtime::v1::ContainerState as CriState;

/// Most output ExecSync returns per stream, as containerd caps it.
const MAX_OUTPUT: u64 = 16 * 1024 * 1024;

/// What ExecSync returns.
#[derive(Debug)]
pub struct ExecOutput {
    /// Its standard output.
    pub stdout: Vec<u8>,
    /// Its standard error.
    pub stderr: Vec<u8>,
    /// Its exit code.
    pub exit_code: i32,
}

/// How a process to run in a container is given to the task service.
#[derive(Debug, Clone, Default)]
pub struct ExecIo {
    /// stdin path (FIFO) or empty.
    pub stdin: String,
    /// stdout URI or path.
    pub stdout: String,
    /// stderr URI or path.
    pub stderr: String,
    /// With a terminal.
    pub terminal: bool,
}

impl Cri {
    /// The running container `prefix` names, for exec and attach.
    pub(super) fn running_container(
        &self,
        prefix: &str,
    ) -> Result<super::store::Container, Status> {
        let c = self.find_container(prefix)?;
        let state = cri_state(&c.state);
        if state != CriState::ContainerRunning {
            return Err(status_of(
                Kind::FailedPrecondition,
                format!("container {:?} is in {} state", c.id, state.as_str_name()),
            ));
        }
        Ok(c)
    }

    /// The process spec of an exec of `cmd` in container `id`: the
    /// container's own process (user, env, cwd, capabilities) with `cmd`.
    async fn exec_process(
        &self,
        id: &str,
        cmd: &[String],
        terminal: bool,
    ) -> Result<Value, Status> {
        let record = self
            .containers
            .get(request(GetContainerRequest { id: id.to_owned() }))
            .await?
            .into_inner()
            .container
            .ok_or_else(|| status_of(Kind::NotFound, format!("container {id:?}: no record")))?;
        let spec: Value = record
            .spec
            .as_ref()
            .and_then(|s| serde_json::from_slice(&s.value).ok())
            .ok_or_else(|| status_of(Kind::DataLoss, format!("container {id:?}: no spec")))?;
        let mut process = spec["process"].clone();
        process["args"] = json!(cmd);
        process["terminal"] = json!(terminal);
        if let Some(o) = process.as_object_mut() {
            o.remove("consoleSize");
        }
        Ok(process)
    }

    /// Starts `cmd` in container `id` as exec `exec_id`.
    pub(super) async fn start_exec(
        &self,
        id: &str,
        exec_id: &str,
        cmd: &[String],
        io: &ExecIo,
    ) -> Result<u32, Status> {
        if cmd.is_empty() {
            return Err(status_of(Kind::InvalidArgument, "no command to run"));
        }
        let process = self.exec_process(id, cmd, io.terminal).await?;
        self.tasks
            .exec(request(ExecProcessRequest {
                container_id: id.to_owned(),
                stdin: io.stdin.clone(),
                stdout: io.stdout.clone(),
                stderr: io.stderr.clone(),
                terminal: io.terminal,
                spec: Some(prost_types::Any {
                    type_url: hull_proto::typeurl::PROCESS_SPEC.to_owned(),
                    value: serde_json::to_vec(&process).unwrap_or_default(),
                }),
                exec_id: exec_id.to_owned(),
            }))
            .await?;
        match self
            .tasks
            .start(request(StartRequest {
                container_id: id.to_owned(),
                exec_id: exec_id.to_owned(),
            }))
            .await
        {
            Ok(r) => Ok(r.into_inner().pid),
            Err(e) => {
                self.delete_exec(id, exec_id).await;
                Err(e)
            }
        }
    }

    /// Forgets exec `exec_id` of `id`.
    pub(super) async fn delete_exec(&self, id: &str, exec_id: &str) {
        let _ = self
            .tasks
            .delete_process(request(DeleteProcessRequest {
                container_id: id.to_owned(),
                exec_id: exec_id.to_owned(),
            }))
            .await;
    }

    /// ExecSync: runs `cmd`, waits up to `timeout` seconds (0: no limit),
    /// returns its output and exit code. Past the timeout the command is
    /// killed and the call fails with DeadlineExceeded, as the kubelet's
    /// probes expect.
    pub(super) async fn exec_sync(
        &self,
        prefix: &str,
        cmd: Vec<String>,
        timeout: i64,
    ) -> Result<ExecOutput, Status> {
        let c = self.running_container(prefix)?;
        let exec_id = format!("exec-{}", &super::new_id()[..16]);
        let dir = self.pods_state.join("exec").join(&exec_id);
        {
            let dir = dir.clone();
            blocking(move || {
                std::fs::create_dir_all(&dir)
                    .map_err(|e| status_of(Kind::Unknown, format!("create {}: {e}", dir.display())))
            })
            .await?;
        }
        let (out, err) = (dir.join("stdout"), dir.join("stderr"));
        let io = ExecIo {
            stdin: String::new(),
            stdout: format!("file://{}", out.display()),
            stderr: format!("file://{}", err.display()),
            terminal: false,
        };
        let result = self
            .run_exec_sync(&c.id, &exec_id, &cmd, &io, timeout)
            .await;
        let output = match result {
            Ok(code) => {
                let (out, err) = (out.clone(), err.clone());
                let read = move |p: PathBuf| -> Vec<u8> {
                    use std::io::Read;
                    let mut buf = Vec::new();
                    if let Ok(f) = std::fs::File::open(p) {
                        let _ = f.take(MAX_OUTPUT).read_to_end(&mut buf);
                    }
                    buf
                };
                let (stdout, stderr) = blocking(move || Ok((read(out), read(err)))).await?;
                Ok(ExecOutput {
                    stdout,
                    stderr,
                    exit_code: code,
                })
            }
            Err(e) => Err(e),
        };
        let _ = blocking(move || {
            let _ = std::fs::remove_dir_all(&dir);
            Ok(())
        })
        .await;
        output
    }

    async fn run_exec_sync(
        &self,
        id: &str,
        exec_id: &str,
        cmd: &[String],
        io: &ExecIo,
        timeout: i64,
    ) -> Result<i32, Status> {
        self.start_exec(id, exec_id, cmd, io).await?;
        let limit = if timeout > 0 {
            Duration::from_secs(timeout as u64)
        } else {
            Duration::from_secs(u64::from(u32::MAX))
        };
        let exit = self.wait(id, exec_id, limit).await;
        let exit = match exit {
            Ok(Some((code, _))) => Ok(i32::try_from(code).unwrap_or(255)),
            Ok(None) => {
                let _ = self.kill(id, exec_id, libc::SIGKILL as u32).await;
                let _ = self.wait(id, exec_id, Duration::from_secs(5)).await;
                Err(status_of(
                    Kind::DeadlineExceeded,
                    format!("command {cmd:?} timed out after {timeout}s"),
                ))
            }
            Err(e) => Err(e),
        };
        self.delete_exec(id, exec_id).await;
        exit
    }
}
