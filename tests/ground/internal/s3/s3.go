// Package s3 starts the ground's S3 servers: versitygw on a local folder (the data path) and
// moto's server with IAM enforced (STS, AssumeRole and access-denied semantics).
package s3

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"outbound.dev/ground/internal/supervise"
)

// Servers describes the running S3 servers.
type Servers struct {
	Endpoint      string // versitygw
	AdminEndpoint string // versitygw's admin API (users for bucket-policy tests)
	AccessKey     string
	SecretKey     string
	Region        string
	MotoEndpoint  string
	MotoAccessKey string
	MotoSecretKey string
	procs         []*supervise.Proc
}

// Options say where the tools are.
type Options struct {
	StateDir     string
	ToolsBin     string // folder with versitygw and moto_server
	Python       string // the venv's python (for moto's bootstrap)
	BootstrapPy  string
	PidDir       string
	VersityPort  int
	VersityAdmin int
	MotoPort     int
	DataDir      string // versitygw's backing folder
}

// Start starts both servers and waits until they answer.
func Start(o Options) (*Servers, error) {
	s := &Servers{Region: "us-east-1", AccessKey: "ground-root", SecretKey: randomHex(20)}
	logDir := filepath.Join(o.StateDir, "logs")
	_ = os.MkdirAll(logDir, 0o755)
	if err := os.MkdirAll(o.DataDir, 0o755); err != nil {
		return nil, err
	}
	iamDir := filepath.Join(o.StateDir, "versitygw-iam")
	_ = os.MkdirAll(iamDir, 0o700)
	s.Endpoint = fmt.Sprintf("http://127.0.0.1:%d", o.VersityPort)
	s.AdminEndpoint = fmt.Sprintf("http://127.0.0.1:%d", o.VersityAdmin)
	vgw := func() *exec.Cmd {
		cmd := exec.Command(filepath.Join(o.ToolsBin, "versitygw"),
			"--port", fmt.Sprintf("127.0.0.1:%d", o.VersityPort),
			"--admin-port", fmt.Sprintf("127.0.0.1:%d", o.VersityAdmin),
			"--iam-dir", iamDir,
			"--quiet",
			"posix", o.DataDir)
		// Keys travel by environment so they never show in the process list.
		cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY_ID="+s.AccessKey, "ROOT_SECRET_ACCESS_KEY="+s.SecretKey)
		return cmd
	}
	if err := s.spawn("versitygw", vgw, logDir, o.PidDir); err != nil {
		return nil, err
	}
	if err := waitTCP(o.VersityPort, 30*time.Second); err != nil {
		s.Stop()
		return nil, fmt.Errorf("versitygw did not start: %w (see %s)", err, filepath.Join(logDir, "versitygw.log"))
	}

	s.MotoEndpoint = fmt.Sprintf("http://127.0.0.1:%d", o.MotoPort)
	// moto keeps its users in memory: a restarted moto would have lost them, but a killed one
	// is still started again so that the ground stays whole.
	moto := func() *exec.Cmd {
		cmd := exec.Command(filepath.Join(o.ToolsBin, "moto_server"), "-H", "127.0.0.1", "-p", fmt.Sprint(o.MotoPort))
		cmd.Env = append(os.Environ(), "INITIAL_NO_AUTH_ACTION_COUNT=3")
		return cmd
	}
	if err := s.spawn("moto", moto, logDir, o.PidDir); err != nil {
		s.Stop()
		return nil, err
	}
	if err := waitTCP(o.MotoPort, 60*time.Second); err != nil {
		s.Stop()
		return nil, fmt.Errorf("moto did not start: %w (see %s)", err, filepath.Join(logDir, "moto.log"))
	}
	var out, errb bytes.Buffer
	boot := exec.Command(o.Python, o.BootstrapPy, s.MotoEndpoint)
	boot.Stdout, boot.Stderr = &out, &errb
	if err := boot.Run(); err != nil {
		s.Stop()
		return nil, fmt.Errorf("moto bootstrap failed: %v: %s", err, errb.String())
	}
	var keys struct {
		AccessKeyID     string `json:"accessKeyId"`
		SecretAccessKey string `json:"secretAccessKey"`
	}
	if err := json.Unmarshal(out.Bytes(), &keys); err != nil {
		s.Stop()
		return nil, fmt.Errorf("moto bootstrap printed %q: %w", out.String(), err)
	}
	s.MotoAccessKey, s.MotoSecretKey = keys.AccessKeyID, keys.SecretAccessKey
	return s, nil
}

func (s *Servers) spawn(name string, newCmd func() *exec.Cmd, logDir, pidDir string) error {
	p, err := supervise.Start(name, newCmd, logDir, pidDir)
	if err != nil {
		return err
	}
	s.procs = append(s.procs, p)
	return nil
}

// Stop ends both servers.
func (s *Servers) Stop() {
	for _, p := range s.procs {
		p.Stop(5 * time.Second)
	}
}

func waitTCP(port int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("port %d not listening after %s", port, timeout)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
