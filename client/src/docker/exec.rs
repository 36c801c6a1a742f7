//! `exec`: another process in a running container, its output streamed
//! back through FIFOs the client makes.

use hull_oci::oci_spec::runtime::Process as OciProcess;
use hull_oci::spec as ocispec;
use hull_proto::containerd::services::tasks::v1::{
    DeleteProcessRequest, ExecProcessRequest, ResizePtyRequest, StartRequest, WaitRequest,
};
use hull_proto::typeurl;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tonic::Status;

use super::logs::open_fifo_writer;
use super::{fsutil, invalid, local, names, Docker};
use crate::Error;

/// What `exec` runs and how.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// The command.
    pub cmd: Vec<String>,
    /// `-i`: pass stdin.
    pub interactive: bool,
    /// `-t`: a terminal (its size is set with [`Docker::resize_exec`]).
    pub tty: bool,
    /// `-d`: start it and return.
    pub detach: bool,
    /// `-w`.
    pub workdir: Option<String>,
    /// `-e`.
    pub env: Vec<String>,
    /// `-u USER[:GROUP]`.
    pub user: Option<String>,
}

impl Docker {
    /// Runs `opts.cmd` in running container `key`, copying its output to
    /// `stdout`/`stderr` (and `stdin` into it with `-i`); returns its
    /// exit code (0 at once with `detach`). `on_start` gets the exec id
    /// once it runs (for resizing its terminal).
    ///
    /// # Errors
    /// NotFound; FailedPrecondition when the container is not running;
    /// InvalidArgument for a bad command, env or user.
    #[allow(clippy::too_many_arguments)]
    pub async fn exec<I, O, E>(
        &self,
        key: &str,
        opts: &ExecOptions,
        stdin: Option<I>,
        mut stdout: O,
        mut stderr: E,
        on_start: impl FnOnce(&str) + Send,
    ) -> Result<u32, Error>
    where
        I: AsyncRead + Unpin + Send + 'static,
        O: AsyncWrite + Unpin + Send,
        E: AsyncWrite + Unpin + Send,
    {
        if opts.cmd.is_empty() {
            return Err(invalid("exec needs a command"));
        }
        for e in &opts.env {
            super::spec::check_env(e)?;
        }
        let c = self.find(key).await?;
        let task = self.task_of(&c.id).await?;
        let pid = match task {
            Some(p) if p.status == hull_proto::containerd::v1::types::Status::Running as i32 => {
                p.pid
            }
            _ => {
                return Err(Error::Status(Status::failed_precondition(format!(
                    "Container {} is not running",
                    c.id
                ))))
            }
        };
        let spec: serde_json::Value = c
            .spec
            .as_ref()
            .and_then(|s| serde_json::from_slice(&s.value).ok())
            .ok_or_else(|| invalid("the container has no spec"))?;
        let mut process: OciProcess = serde_json::from_value(spec["process"].clone())
            .map_err(|e| invalid(format!("the container's process spec: {e}")))?;
        process.set_args(Some(opts.cmd.clone()));
        process.set_terminal(Some(opts.tty));
        let env = process.env().clone().unwrap_or_default();
        process.set_env(Some(ocispec::merge_env(&env, &opts.env)));
        if let Some(w) = &opts.workdir {
            process.set_cwd(w.into());
        }
        if let Some(u) = &opts.user {
            let root = std::path::PathBuf::from(format!("/proc/{pid}/root"));
            let read = |p: &str| std::fs::read_to_string(fsutil::resolve_in(&root, p)).ok();
            let user = ocispec::resolve_user(
                u,
                read("/etc/passwd").as_deref(),
                read("/etc/group").as_deref(),
            )
            .map_err(|e| invalid(format!("unable to find user {u}: {e}")))?;
            let mut pu = process.user().clone();
            pu.set_uid(user.uid);
            pu.set_gid(user.gid);
            pu.set_additional_gids(
                (!user.additional_gids.is_empty()).then_some(user.additional_gids),
            );
            process.set_user(pu);
        }
        let exec_id = format!("exec-{}", &names::new_id()[..16]);
        let dir = tempfile::Builder::new()
            .prefix("hull-exec-")
            .tempdir()
            .map_err(local("create exec FIFOs"))?;
        let fifo = |name: &str| -> Result<String, Error> {
            let p = dir.path().join(name);
            nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600))
                .map_err(|e| local("mkfifo")(e.into()))?;
            Ok(p.to_string_lossy().into_owned())
        };
        let (in_path, out_path, err_path) = if opts.detach {
            (String::new(), String::new(), String::new())
        } else {
            (
                if opts.interactive {
                    fifo("stdin")?
                } else {
                    String::new()
                },
                fifo("stdout")?,
                if opts.tty {
                    String::new()
                } else {
                    fifo("stderr")?
                },
            )
        };
        let spec_json = serde_json::to_vec(&process).map_err(|e| invalid(e.to_string()))?;
        let mut tasks = self.client.tasks();
        tasks
            .exec(ExecProcessRequest {
                container_id: c.id.clone(),
                stdin: in_path.clone(),
                stdout: out_path.clone(),
                stderr: err_path.clone(),
                terminal: opts.tty,
                spec: Some(prost_types::Any {
                    type_url: typeurl::PROCESS_SPEC.to_owned(),
                    value: spec_json,
                }),
                exec_id: exec_id.clone(),
            })
            .await?;
        let open = |p: &str| -> Result<Option<tokio::net::unix::pipe::Receiver>, Error> {
            if p.is_empty() {
                return Ok(None);
            }
            tokio::net::unix::pipe::OpenOptions::new()
                .open_receiver(p)
                .map(Some)
                .map_err(local("open exec output"))
        };
        let out_r = open(&out_path)?;
        let err_r = open(&err_path)?;
        let started = tasks
            .start(StartRequest {
                container_id: c.id.clone(),
                exec_id: exec_id.clone(),
            })
            .await;
        if let Err(s) = started {
            let _ = tasks
                .delete_process(DeleteProcessRequest {
                    container_id: c.id.clone(),
                    exec_id: exec_id.clone(),
                })
                .await;
            return Err(s.into());
        }
        on_start(&exec_id);
        if opts.detach {
            return Ok(0);
        }
        let input = match (stdin, in_path.is_empty()) {
            (Some(mut stdin), false) => {
                let p = std::path::PathBuf::from(&in_path);
                Some(tokio::spawn(async move {
                    if let Ok(mut to) = open_fifo_writer(&p).await {
                        let _ = tokio::io::copy(&mut stdin, &mut to).await;
                        let _ = to.shutdown().await;
                    }
                }))
            }
            _ => None,
        };
        let copy_out = async {
            if let Some(mut r) = out_r {
                let _ = tokio::io::copy(&mut r, &mut stdout).await;
            }
            let _ = stdout.flush().await;
        };
        let copy_err = async {
            if let Some(mut r) = err_r {
                let _ = tokio::io::copy(&mut r, &mut stderr).await;
            }
            let _ = stderr.flush().await;
        };
        let mut waiter = self.client.tasks();
        let wait = waiter.wait(WaitRequest {
            container_id: c.id.clone(),
            exec_id: exec_id.clone(),
        });
        let (status, (), ()) = tokio::join!(wait, copy_out, copy_err);
        if let Some(t) = input {
            t.abort();
        }
        let code = status?.into_inner().exit_status;
        let _ = tasks
            .delete_process(DeleteProcessRequest {
                container_id: c.id.clone(),
                exec_id,
            })
            .await;
        drop(dir);
        Ok(code)
    }

    /// Sets the terminal size of exec `exec_id` (or of the container's
    /// own process when empty).
    ///
    /// # Errors
    /// NotFound.
    pub async fn resize_exec(
        &self,
        id: &str,
        exec_id: &str,
        width: u32,
        height: u32,
    ) -> Result<(), Error> {
        self.client
            .tasks()
            .resize_pty(ResizePtyRequest {
                container_id: id.to_owned(),
                exec_id: exec_id.to_owned(),
                width,
                height,
            })
            .await?;
        Ok(())
    }
}
