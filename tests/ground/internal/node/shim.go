package node

// The container shim: `ground exec-container SPEC` runs in a fresh mount namespace (the parent
// clones it with CLONE_NEWNS), bind-mounts the pod's volumes at their mount paths (read-only
// where asked), then replaces itself with the container's process.

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// Mount is one bind mount made inside the container's mount namespace.
type Mount struct {
	Source   string `json:"source"`
	Target   string `json:"target"`
	ReadOnly bool   `json:"readOnly"`
	File     bool   `json:"file,omitempty"`
}

// ShimSpec is what the node hands to the shim.
type ShimSpec struct {
	Mounts     []Mount  `json:"mounts"`
	WorkingDir string   `json:"workingDir,omitempty"`
	Path       string   `json:"path"`
	Args       []string `json:"args"`
}

// RunShim is the shim's entry point; it only returns on error.
func RunShim(specPath string) error {
	data, err := os.ReadFile(specPath)
	if err != nil {
		return err
	}
	var spec ShimSpec
	if err := json.Unmarshal(data, &spec); err != nil {
		return err
	}
	// Keep our mounts from propagating back to the host's namespace.
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("failed to make mounts private: %w", err)
	}
	for _, m := range spec.Mounts {
		if m.File {
			if err := os.MkdirAll(filepath.Dir(m.Target), 0o755); err != nil {
				return err
			}
			if _, err := os.Stat(m.Target); os.IsNotExist(err) {
				if f, err := os.OpenFile(m.Target, os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
					f.Close()
				}
			}
		} else if err := os.MkdirAll(m.Target, 0o755); err != nil {
			return fmt.Errorf("failed to create mount point %s: %w", m.Target, err)
		}
		if err := syscall.Mount(m.Source, m.Target, "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
			return fmt.Errorf("failed to mount %s at %s: %w", m.Source, m.Target, err)
		}
		if m.ReadOnly {
			if err := syscall.Mount("", m.Target, "", syscall.MS_BIND|syscall.MS_REMOUNT|syscall.MS_RDONLY|syscall.MS_REC, ""); err != nil {
				return fmt.Errorf("failed to make %s read-only: %w", m.Target, err)
			}
		}
	}
	if spec.WorkingDir != "" {
		if err := os.MkdirAll(spec.WorkingDir, 0o755); err != nil {
			return err
		}
		if err := os.Chdir(spec.WorkingDir); err != nil {
			return err
		}
	}
	// The environment came from the node through exec, never through a file: secret values
	// from secretKeyRef stay off the disk.
	return syscall.Exec(spec.Path, append([]string{spec.Path}, spec.Args...), os.Environ())
}
