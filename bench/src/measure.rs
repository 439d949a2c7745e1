//! Running a command as a child process and reading what the operating system charged it:
//! user and system CPU, and peak resident memory, from `wait4` (not wall time, and not this
//! process's own work).

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::Context;

/// What one process cost.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Usage {
    pub user_s: f64,
    pub sys_s: f64,
    /// From spawn to exit, or to the moment the caller said the work was done.
    pub wall_s: f64,
    pub max_rss_mb: f64,
}

impl Usage {
    pub fn cpu_s(&self) -> f64 {
        self.user_s + self.sys_s
    }
}

/// A child process being measured.
pub struct Running {
    child: Child,
    started: Instant,
    what: String,
}

impl Running {
    pub fn spawn(cmd: &mut Command) -> anyhow::Result<Running> {
        let what = format!("{:?}", cmd.get_program());
        let started = Instant::now();
        let child = cmd.spawn().with_context(|| format!("starting {what}"))?;
        Ok(Running { child, started, what })
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    /// Whether the process has exited (without reaping it, so `wait` still gets its usage).
    pub fn has_exited(&self) -> bool {
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid with WNOWAIT only inspects the child's state; `info` is a valid,
        // zeroed siginfo_t that the call fills in.
        let r = unsafe {
            libc::waitid(libc::P_PID, self.child.id(), &mut info, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT)
        };
        // SAFETY: reading si_pid of a siginfo_t filled by waitid (0 if nothing has exited).
        r == 0 && unsafe { info.si_pid() } != 0
    }

    /// Asks the process to stop (SIGTERM), as an operator would.
    pub fn terminate(&self) -> anyhow::Result<()> {
        // SAFETY: kill(2) on our own child's pid, which is not reaped yet (so not reused).
        let r = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        anyhow::ensure!(r == 0, "could not signal {}: {}", self.what, std::io::Error::last_os_error());
        Ok(())
    }

    /// Waits for the exit and returns the usage. `wall` overrides the measured wall time (for
    /// runs that end when their output has been seen, not when the process exits).
    pub fn wait(self, wall: Option<Duration>) -> anyhow::Result<Usage> {
        let mut status = 0;
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: wait4 on our own child; `status` and `usage` are valid for writes.
        let r = unsafe { libc::wait4(self.child.id() as libc::pid_t, &mut status, 0, &mut usage) };
        anyhow::ensure!(r > 0, "waiting for {}: {}", self.what, std::io::Error::last_os_error());
        let wall = wall.unwrap_or_else(|| self.started.elapsed());
        anyhow::ensure!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "{} failed (wait status {status:#x})",
            self.what
        );
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        Ok(Usage {
            user_s: secs(usage.ru_utime),
            sys_s: secs(usage.ru_stime),
            wall_s: wall.as_secs_f64(),
            // Linux counts the parent's resident memory at spawn in the child's peak (the
            // copy before exec): adbench keeps itself small for that reason.
            max_rss_mb: usage.ru_maxrss as f64 / 1024.0,
        })
    }
}
