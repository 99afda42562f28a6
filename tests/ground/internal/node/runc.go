package node

// Containers of registry images, run with runc from an OCI runtime spec derived from the pod as a
// kubelet and containerd would derive it: the image's root filesystem under an overlay of the
// container's own, the security context (users and groups, read-only root, capabilities,
// no_new_privs, seccomp), memory and CPU limits in cgroups (v1 here), the pod's volumes bind-
// mounted, in the pod's network namespace (netns.go).

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	corev1 "k8s.io/api/core/v1"
)

// runtimeDefaultCaps is containerd's default capability set, which RuntimeDefault pods start
// from before their drops and adds.
var runtimeDefaultCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
	"CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// deniedSyscalls is the RuntimeDefault seccomp profile, as a deny list: the system calls that
// Docker's and containerd's default profiles refuse to a container without extra capabilities.
// (Their allow lists are long; refusing the same dangerous calls keeps this profile readable.)
var deniedSyscalls = []string{
	"acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "create_module", "delete_module",
	"finit_module", "fsconfig", "fsmount", "fsopen", "fspick", "get_kernel_syms", "init_module",
	"ioperm", "iopl", "kcmp", "kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie", "mount",
	"mount_setattr", "move_mount", "name_to_handle_at", "nfsservctl", "open_by_handle_at",
	"open_tree", "perf_event_open", "pivot_root", "process_vm_readv", "process_vm_writev", "ptrace",
	"query_module", "quotactl", "reboot", "request_key", "setns", "settimeofday", "swapoff",
	"swapon", "sysfs", "_sysctl", "umount", "umount2", "unshare", "uselib", "userfaultfd", "ustat",
	"vm86", "vm86old",
}

// securityOf merges the pod's and the container's security contexts, the container's winning.
type security struct {
	uid, gid       *int64
	runAsNonRoot   bool
	groups         []uint32
	readOnlyRoot   bool
	noNewPrivs     bool
	caps           []string
	seccompDefault bool
}

func securityOf(pod *corev1.Pod, c corev1.Container) (security, error) {
	var s security
	psc := pod.Spec.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	csc := c.SecurityContext
	if csc == nil {
		csc = &corev1.SecurityContext{}
	}
	s.uid, s.gid = psc.RunAsUser, psc.RunAsGroup
	if csc.RunAsUser != nil {
		s.uid = csc.RunAsUser
	}
	if csc.RunAsGroup != nil {
		s.gid = csc.RunAsGroup
	}
	s.runAsNonRoot = (psc.RunAsNonRoot != nil && *psc.RunAsNonRoot) || (csc.RunAsNonRoot != nil && *csc.RunAsNonRoot)
	if csc.RunAsNonRoot != nil {
		s.runAsNonRoot = *csc.RunAsNonRoot
	}
	if psc.FSGroup != nil {
		s.groups = append(s.groups, uint32(*psc.FSGroup))
	}
	for _, g := range psc.SupplementalGroups {
		s.groups = append(s.groups, uint32(g))
	}
	s.readOnlyRoot = csc.ReadOnlyRootFilesystem != nil && *csc.ReadOnlyRootFilesystem
	s.noNewPrivs = csc.AllowPrivilegeEscalation != nil && !*csc.AllowPrivilegeEscalation
	if csc.Privileged != nil && *csc.Privileged {
		return s, fmt.Errorf("privileged containers are not supported by the ground's node")
	}
	caps := map[string]bool{}
	for _, cp := range runtimeDefaultCaps {
		caps[cp] = true
	}
	if csc.Capabilities != nil {
		for _, d := range csc.Capabilities.Drop {
			if strings.EqualFold(string(d), "ALL") {
				caps = map[string]bool{}
			} else {
				delete(caps, capName(d))
			}
		}
		for _, a := range csc.Capabilities.Add {
			caps[capName(a)] = true
		}
	}
	for _, cp := range runtimeDefaultCaps {
		if caps[cp] {
			s.caps = append(s.caps, cp)
			delete(caps, cp)
		}
	}
	for cp := range caps {
		s.caps = append(s.caps, cp)
	}
	profile := psc.SeccompProfile
	if csc.SeccompProfile != nil {
		profile = csc.SeccompProfile
	}
	if profile != nil {
		switch profile.Type {
		case corev1.SeccompProfileTypeRuntimeDefault:
			s.seccompDefault = true
		case corev1.SeccompProfileTypeLocalhost:
			return s, fmt.Errorf("seccomp profile type Localhost is not supported by the ground's node")
		}
	}
	return s, nil
}

func capName(c corev1.Capability) string {
	n := strings.ToUpper(string(c))
	if !strings.HasPrefix(n, "CAP_") {
		n = "CAP_" + n
	}
	return n
}

// imageUser reads the image config's User: "uid", "uid:gid", or a name from the image's
// /etc/passwd (and /etc/group).
func imageUser(img *pulledImage) (uid, gid uint32, err error) {
	user, group, _ := strings.Cut(img.Config.User, ":")
	if user == "" {
		return 0, 0, nil
	}
	u, uerr := strconv.ParseUint(user, 10, 32)
	primary := uint64(0)
	if uerr != nil || group == "" {
		found := false
		data, _ := os.ReadFile(filepath.Join(img.Rootfs, "etc/passwd"))
		for _, line := range strings.Split(string(data), "\n") {
			f := strings.Split(line, ":")
			if len(f) >= 4 && (f[0] == user || f[2] == user) {
				u, _ = strconv.ParseUint(f[2], 10, 32)
				primary, _ = strconv.ParseUint(f[3], 10, 32)
				found = true
				break
			}
		}
		if uerr != nil && !found {
			return 0, 0, fmt.Errorf("user %q of the image is not in its /etc/passwd", user)
		}
	}
	g := primary
	if group != "" {
		var gerr error
		if g, gerr = strconv.ParseUint(group, 10, 32); gerr != nil {
			data, _ := os.ReadFile(filepath.Join(img.Rootfs, "etc/group"))
			found := false
			for _, line := range strings.Split(string(data), "\n") {
				if f := strings.Split(line, ":"); len(f) >= 3 && f[0] == group {
					g, _ = strconv.ParseUint(f[2], 10, 32)
					found = true
				}
			}
			if !found {
				return 0, 0, fmt.Errorf("group %q of the image is not in its /etc/group", group)
			}
		}
	}
	return uint32(u), uint32(g), nil
}

// containerArgs applies Kubernetes' rules: command replaces the entrypoint, args the cmd.
func containerArgs(c corev1.Container, img *pulledImage, env []string) []string {
	entry, cmd := img.Config.Entrypoint, img.Config.Cmd
	if len(c.Command) > 0 {
		entry, cmd = expandAll(c.Command, env), nil
	}
	if len(c.Args) > 0 {
		cmd = expandAll(c.Args, env)
	}
	return append(append([]string{}, entry...), cmd...)
}

// mergeEnv is the image's environment overridden by the container's, each name once (a process
// that reads the first of two would otherwise see the image's value).
func mergeEnv(image, container []string) []string {
	index := map[string]int{}
	var out []string
	for _, kv := range append(append([]string{}, image...), container...) {
		name, _, _ := strings.Cut(kv, "=")
		if i, ok := index[name]; ok {
			out[i] = kv
			continue
		}
		index[name] = len(out)
		out = append(out, kv)
	}
	return out
}

// cgroupParent is where this ground's containers live in every cgroup hierarchy; named after the
// state folder so that two grounds on one machine never share one.
func cgroupParent(stateDir string) string {
	sum := sha256.Sum256([]byte(stateDir))
	return "outbound-ground-" + hex.EncodeToString(sum[:4])
}

// runcSpec is the OCI runtime spec of one container.
func runcSpec(pod *corev1.Pod, c corev1.Container, img *pulledImage, sec security, env []string,
	mounts []Mount, rootfs, cgroupsPath, netns string) (*specs.Spec, error) {
	uid, gid, err := imageUser(img)
	if err != nil {
		return nil, err
	}
	if sec.uid != nil {
		uid = uint32(*sec.uid)
		if sec.gid == nil && img.Config.User == "" {
			gid = 0
		}
	}
	if sec.gid != nil {
		gid = uint32(*sec.gid)
	}
	if sec.runAsNonRoot && uid == 0 {
		return nil, fmt.Errorf("container has runAsNonRoot and image will run as root (pod: %q, container: %s)", pod.Namespace+"/"+pod.Name, c.Name)
	}
	args := containerArgs(c, img, env)
	if len(args) == 0 {
		return nil, fmt.Errorf("no command specified")
	}
	cwd := c.WorkingDir
	if cwd == "" {
		cwd = img.Config.WorkingDir
	}
	if cwd == "" {
		cwd = "/"
	}
	process := &specs.Process{
		User:            specs.User{UID: uid, GID: gid, AdditionalGids: sec.groups},
		Args:            args,
		Env:             mergeEnv(img.Config.Env, env),
		Cwd:             cwd,
		NoNewPrivileges: sec.noNewPrivs,
		Capabilities: &specs.LinuxCapabilities{
			Bounding: sec.caps, Effective: sec.caps, Permitted: sec.caps,
		},
	}
	specMounts := []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", "ro"}},
	}
	for _, m := range mounts {
		opts := []string{"rbind", "rprivate"}
		if m.ReadOnly {
			opts = append(opts, "ro")
		}
		specMounts = append(specMounts, specs.Mount{Destination: m.Target, Type: "bind", Source: m.Source, Options: opts})
	}
	resources := &specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}}}
	if q, ok := c.Resources.Limits[corev1.ResourceMemory]; ok {
		limit := q.Value()
		resources.Memory = &specs.LinuxMemory{Limit: &limit, Swap: &limit}
	}
	if q, ok := c.Resources.Limits[corev1.ResourceCPU]; ok {
		period := uint64(100000)
		quota := max(q.MilliValue()*int64(period)/1000, 1000)
		resources.CPU = &specs.LinuxCPU{Period: &period, Quota: &quota}
	}
	if q, ok := c.Resources.Requests[corev1.ResourceCPU]; ok {
		shares := uint64(max(q.MilliValue()*1024/1000, 2))
		if resources.CPU == nil {
			resources.CPU = &specs.LinuxCPU{}
		}
		resources.CPU.Shares = &shares
	}
	linux := &specs.Linux{
		Namespaces: []specs.LinuxNamespace{
			{Type: specs.PIDNamespace}, {Type: specs.IPCNamespace}, {Type: specs.UTSNamespace}, {Type: specs.MountNamespace},
		},
		CgroupsPath: cgroupsPath,
		Resources:   resources,
		MaskedPaths: []string{"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
			"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap"},
		ReadonlyPaths: []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"},
	}
	if netns != "" {
		linux.Namespaces = append(linux.Namespaces, specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: netns})
	}
	if sec.seccompDefault {
		eperm := uint(syscall.EPERM)
		linux.Seccomp = &specs.LinuxSeccomp{
			DefaultAction: specs.ActAllow,
			Architectures: []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32},
			Syscalls:      []specs.LinuxSyscall{{Names: deniedSyscalls, Action: specs.ActErrno, ErrnoRet: &eperm}},
		}
	}
	return &specs.Spec{
		Version:  specs.Version,
		Process:  process,
		Root:     &specs.Root{Path: rootfs, Readonly: sec.readOnlyRoot},
		Hostname: pod.Name,
		Mounts:   specMounts,
		Linux:    linux,
	}, nil
}

// runcContainer is one run of a container: its bundle, its root filesystem (an overlay on the
// image's) and its cgroup.
type runcContainer struct {
	id, runc, root string
	bundle         string
	rootfs         string
	cgroup         string // relative to each hierarchy's root
}

// prepareRunc writes the bundle of one run of c and mounts its root filesystem.
func (w *podWorker) prepareRunc(c corev1.Container, img *pulledImage, env []string, mounts []Mount, cdir string, attempt int32) (*runcContainer, error) {
	sec, err := securityOf(w.pod, c)
	if err != nil {
		return nil, err
	}
	id := fmt.Sprintf("%s-%s-%d", w.pod.UID, c.Name, attempt)
	r := &runcContainer{
		id: id, runc: w.node.cfg.Runc, root: w.node.runcRoot(),
		bundle: filepath.Join(cdir, fmt.Sprintf("bundle-%d", attempt)),
		cgroup: "/" + cgroupParent(w.node.cfg.StateDir) + "/" + id,
	}
	r.rootfs = filepath.Join(r.bundle, "rootfs")
	spec, err := runcSpec(w.pod, c, img, sec, env, mounts, r.rootfs, r.cgroup, w.netns)
	if err != nil {
		return nil, err
	}
	upper, work := filepath.Join(r.bundle, "upper"), filepath.Join(r.bundle, "work")
	for _, d := range []string{r.rootfs, upper, work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	// The image's files stay shared and untouched: each run writes into an upper layer of its
	// own (or nowhere, with a read-only root).
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", img.Rootfs, upper, work)
	if err := syscall.Mount("overlay", r.rootfs, "overlay", 0, opts); err != nil {
		return nil, fmt.Errorf("failed to mount the root filesystem: %w", err)
	}
	data, err := json.MarshalIndent(spec, "", "  ")
	if err == nil {
		err = os.WriteFile(filepath.Join(r.bundle, "config.json"), data, 0o600)
	}
	if err != nil {
		r.cleanup()
		return nil, err
	}
	return r, nil
}

// command is `runc run` of the container, kept after it exits so that its cgroup can still be
// read (oomKilled); cleanup deletes it.
func (r *runcContainer) command() *exec.Cmd {
	cmd := exec.Command(r.runc, "--root", r.root, "run", "--keep", "--bundle", r.bundle, r.id)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	return cmd
}

// oomKilled tells whether the kernel's OOM killer killed a process of the container because of
// its memory limit (cgroup v1's counter; the kubelet reads the same event from its runtime).
func (r *runcContainer) oomKilled() bool {
	data, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/memory", r.cgroup, "memory.oom_control"))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "oom_kill" && f[1] != "0" {
			return true
		}
	}
	return false
}

func (r *runcContainer) cleanup() {
	_ = exec.Command(r.runc, "--root", r.root, "delete", "--force", r.id).Run()
	_ = syscall.Unmount(r.rootfs, syscall.MNT_DETACH)
	_ = os.RemoveAll(r.bundle)
}

// cleanupCgroups removes this ground's (empty) cgroup folders from every hierarchy.
func cleanupCgroups(stateDir string) {
	dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/*", cgroupParent(stateDir)))
	for _, d := range dirs {
		children, _ := filepath.Glob(filepath.Join(d, "*"))
		for _, c := range children {
			if st, err := os.Stat(c); err == nil && st.IsDir() {
				_ = syscall.Rmdir(c)
			}
		}
		_ = syscall.Rmdir(d)
	}
}
