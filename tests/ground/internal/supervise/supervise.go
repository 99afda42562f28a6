// Package supervise runs the ground's child processes and starts again any that dies while the
// ground is up, as a kubelet restarts a static pod: chaos tests kill the API server or the S3
// server (by the PID in its pid file) and expect them back, with their data.
package supervise

import (
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Proc is one supervised child process.
type Proc struct {
	name     string
	newCmd   func() *exec.Cmd
	pidFile  string
	logFile  *os.File
	mu       sync.Mutex
	cmd      *exec.Cmd
	stopping atomic.Bool
	restarts atomic.Int32
}

// Start starts `newCmd()` (its output appended to logDir/<name>.log, its PID written to
// pidDir/<name>.pid) and keeps it running until Stop.
func Start(name string, newCmd func() *exec.Cmd, logDir, pidDir string) (*Proc, error) {
	f, err := os.OpenFile(filepath.Join(logDir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	p := &Proc{name: name, newCmd: newCmd, pidFile: filepath.Join(pidDir, name+".pid"), logFile: f}
	if err := p.start(); err != nil {
		f.Close()
		return nil, err
	}
	go p.watch()
	return p, nil
}

func (p *Proc) start() error {
	cmd := p.newCmd()
	cmd.Stdout, cmd.Stderr = p.logFile, p.logFile
	// Die with the ground even if it is killed without a chance to clean up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("failed to start %s: %w", p.name, err)
	}
	p.mu.Lock()
	p.cmd = cmd
	p.mu.Unlock()
	return os.WriteFile(p.pidFile, []byte(fmt.Sprint(cmd.Process.Pid)), 0o644)
}

func (p *Proc) watch() {
	for {
		_ = p.current().Wait()
		if p.stopping.Load() {
			p.logFile.Close()
			return
		}
		n := p.restarts.Add(1)
		log.Printf("ground: %s exited; starting it again (restart %d)", p.name, n)
		time.Sleep(500 * time.Millisecond)
		if err := p.start(); err != nil {
			log.Printf("ground: %v", err)
			p.logFile.Close()
			return
		}
	}
}

func (p *Proc) current() *exec.Cmd {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd
}

// Pid is the PID of the running process.
func (p *Proc) Pid() int { return p.current().Process.Pid }

// Stop ends the process for good: SIGTERM to its group, SIGKILL after grace.
func (p *Proc) Stop(grace time.Duration) {
	p.stopping.Store(true)
	pid := p.Pid()
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if syscall.Kill(pid, 0) != nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	_ = syscall.Kill(pid, syscall.SIGKILL)
}
