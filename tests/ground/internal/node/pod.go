package node

// A pod worker: prepares a pod's volumes, environment and network, runs its containers (with runc,
// or as host processes in their own mount namespaces), and writes container states and the pod
// phase back to the API.

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"outbound.dev/ground/internal/cluster"
)

type podWorker struct {
	node *Node
	pod  *corev1.Pod
	dir  string

	mu       sync.Mutex
	stopping bool
	grace    time.Duration
	stopCh   chan struct{}
	procs    map[string]*proc
	statuses map[string]*corev1.ContainerStatus
	done     chan struct{}
	netns    string // the pod's network namespace, when it has one
}

// anyRunc tells whether some container of the pod runs an image the images file does not map.
func (w *podWorker) anyRunc() bool {
	for _, c := range append(append([]corev1.Container{}, w.pod.Spec.InitContainers...), w.pod.Spec.Containers...) {
		if _, mapped := w.node.resolveImage(c.Image); !mapped {
			return true
		}
	}
	return false
}

func newPodWorker(n *Node, pod *corev1.Pod) *podWorker {
	return &podWorker{
		node:     n,
		pod:      pod.DeepCopy(),
		dir:      n.podDir(pod),
		stopCh:   make(chan struct{}),
		procs:    map[string]*proc{},
		statuses: map[string]*corev1.ContainerStatus{},
		done:     make(chan struct{}),
	}
}

// requestStop starts a graceful stop; pod is the deleted pod (for its grace period) or nil when
// the object is already gone.
func (w *podWorker) requestStop(pod *corev1.Pod) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopping {
		return
	}
	w.stopping = true
	w.grace = 30 * time.Second
	if pod != nil && pod.DeletionGracePeriodSeconds != nil {
		w.grace = time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
	} else if w.pod.Spec.TerminationGracePeriodSeconds != nil {
		w.grace = time.Duration(*w.pod.Spec.TerminationGracePeriodSeconds) * time.Second
	}
	if pod == nil {
		w.grace = 0
	}
	close(w.stopCh)
	for _, p := range w.procs {
		p.signal(syscall.SIGTERM)
	}
	grace := w.grace
	procs := make([]*proc, 0, len(w.procs))
	for _, p := range w.procs {
		procs = append(procs, p)
	}
	go func() {
		deadline := time.Now().Add(grace)
		for time.Now().Before(deadline) {
			alive := false
			for _, p := range procs {
				if syscall.Kill(p.pid, 0) == nil {
					alive = true
				}
			}
			if !alive {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		for _, p := range procs {
			p.signal(syscall.SIGKILL)
		}
	}()
}

// killNow stops the pod at once (the ground is shutting down) and waits for the worker.
func (w *podWorker) killNow() {
	w.mu.Lock()
	if !w.stopping {
		w.stopping = true
		close(w.stopCh)
	}
	for _, p := range w.procs {
		p.signal(syscall.SIGKILL)
	}
	w.mu.Unlock()
	select {
	case <-w.done:
	case <-time.After(5 * time.Second):
	}
}

func (w *podWorker) isStopping() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stopping
}

func (w *podWorker) run(ctx context.Context) {
	defer close(w.done)
	defer w.node.forget(w.pod.UID)
	pod := w.pod
	if err := os.MkdirAll(w.dir, 0o755); err != nil {
		log.Printf("node: %v", err)
		return
	}
	_ = os.MkdirAll(filepath.Dir(w.node.logPath(pod, "x")), 0o755)

	for _, c := range pod.Spec.Containers {
		w.statuses[c.Name] = &corev1.ContainerStatus{Name: c.Name, Image: c.Image, ImageID: "ground://" + c.Image,
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}}
	}
	mounts, err := w.prepareVolumes(ctx)
	for err != nil && !w.isStopping() {
		// Volumes that are not ready yet (an unbound claim) keep the pod Pending, as on a real node.
		w.setWaiting("ContainerCreating", err.Error())
		w.report(ctx, corev1.PodPending, "")
		select {
		case <-time.After(2 * time.Second):
		case <-w.stopCh:
		}
		mounts, err = w.prepareVolumes(ctx)
	}

	// A pod whose containers run with runc gets a network namespace of its own, unless it asks
	// for the host's.
	if w.node.cfg.Runc != "" && !pod.Spec.HostNetwork && w.anyRunc() && !w.isStopping() {
		network, err := newPodNetwork(filepath.Join(w.node.cfg.StateDir, "netns", string(pod.UID)), w.node.cfg.ForwardPorts)
		if err != nil {
			log.Printf("node: pod %s/%s: %v", pod.Namespace, pod.Name, err)
			w.setWaiting("ContainerCreating", err.Error())
			w.report(ctx, corev1.PodFailed, err.Error())
			return
		}
		defer network.close()
		w.netns = network.path
	}

	phase := corev1.PodPending
	if !w.isStopping() {
		ok := true
		for _, c := range pod.Spec.InitContainers {
			code := w.runContainer(ctx, c, mounts, true)
			if code != 0 {
				ok = false
				break
			}
		}
		if ok && !w.isStopping() {
			var wg sync.WaitGroup
			for _, c := range pod.Spec.Containers {
				wg.Add(1)
				go func() { defer wg.Done(); w.runContainer(ctx, c, mounts, false) }()
			}
			wg.Wait()
		}
		phase = corev1.PodSucceeded
		for _, st := range w.snapshotStatuses() {
			if st.State.Terminated == nil || st.State.Terminated.ExitCode != 0 {
				phase = corev1.PodFailed
			}
		}
		if !ok {
			phase = corev1.PodFailed
		}
	} else {
		phase = corev1.PodFailed
	}
	w.report(ctx, phase, "")
	if w.isStopping() {
		// The pod was deleted: finish the deletion the API server is waiting for.
		w.node.finalDelete(ctx, pod)
	}
	_ = os.RemoveAll(filepath.Join(w.dir, "volumes"))
}

func (w *podWorker) snapshotStatuses() []corev1.ContainerStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]corev1.ContainerStatus, 0, len(w.statuses))
	for _, c := range w.pod.Spec.Containers {
		out = append(out, *w.statuses[c.Name].DeepCopy())
	}
	return out
}

func (w *podWorker) setWaiting(reason, message string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, st := range w.statuses {
		if st.State.Terminated == nil && st.State.Running == nil {
			st.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: message}}
		}
	}
}

// runContainer runs one container under the pod's restart policy and returns its last exit code.
func (w *podWorker) runContainer(ctx context.Context, c corev1.Container, podMounts map[string]volumeSource, init bool) int32 {
	restarts := int32(0)
	backoff := time.Second
	for {
		code, startedAt, finishedAt, message, reason := w.startOnce(ctx, c, podMounts, init, restarts)
		if !init {
			w.mu.Lock()
			st := w.statuses[c.Name]
			st.Ready = false
			st.Started = boolPtr(false)
			st.RestartCount = restarts
			st.State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: code, Reason: reason, Message: message, StartedAt: startedAt, FinishedAt: finishedAt,
				ContainerID: st.ContainerID,
			}}
			w.mu.Unlock()
		}
		policy := w.pod.Spec.RestartPolicy
		again := !w.isStopping() && (policy == corev1.RestartPolicyAlways || (policy == corev1.RestartPolicyOnFailure && code != 0))
		if init && code != 0 && policy != corev1.RestartPolicyNever && !w.isStopping() {
			again = true
		}
		if !again {
			return code
		}
		restarts++
		if !init {
			w.mu.Lock()
			st := w.statuses[c.Name]
			st.LastTerminationState = st.State
			st.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff", Message: fmt.Sprintf("back-off %s restarting failed container", backoff)}}
			st.RestartCount = restarts
			w.mu.Unlock()
			w.report(ctx, corev1.PodRunning, "")
		}
		select {
		case <-time.After(backoff):
		case <-w.stopCh:
			return code
		}
		if backoff < 10*time.Second {
			backoff *= 2
		}
	}
}

func boolPtr(b bool) *bool { return &b }

// proc is a running container: a process of the host (a mapped image), or `runc run` of a
// container (runcID set), which forwards the signals it gets to the container's init.
type proc struct {
	pid    int
	runc   string
	root   string
	runcID string
}

// signal delivers sig to the container; SIGKILL also reaches a runc container's processes when
// runc itself is gone.
func (p *proc) signal(sig syscall.Signal) {
	if p.runcID != "" && sig == syscall.SIGKILL {
		_ = exec.Command(p.runc, "--root", p.root, "kill", p.runcID, "KILL").Run()
	}
	_ = syscall.Kill(-p.pid, sig)
}

// startOnce starts the container and waits for it: a process of the host for an image mapped in
// the images file, else the image pulled from its registry and run with runc.
func (w *podWorker) startOnce(ctx context.Context, c corev1.Container, podMounts map[string]volumeSource, init bool, attempt int32) (code int32, started, finished metav1.Time, message, reason string) {
	pod := w.pod
	fail := func(reason, msg string) (int32, metav1.Time, metav1.Time, string, string) {
		now := metav1.Now()
		return 128, now, now, msg, reason
	}
	mapped, isMapped := w.node.resolveImage(c.Image)
	useRunc := !isMapped && w.node.cfg.Runc != ""
	env, err := w.containerEnv(ctx, c, !useRunc)
	if err != nil {
		w.setContainerWaiting(c.Name, "CreateContainerConfigError", err.Error())
		return fail("CreateContainerConfigError", err.Error())
	}
	var img *pulledImage
	var path string
	var args []string
	switch {
	case useRunc:
		w.setContainerWaiting(c.Name, "ContainerCreating", "pulling image "+c.Image)
		img, err = w.node.store.pull(ctx, c.Image, c.ImagePullPolicy)
		if err != nil {
			reason := "ErrImagePull"
			if _, never := err.(errNeverPull); never {
				reason = "ErrImageNeverPull"
			}
			w.setContainerWaiting(c.Name, reason, err.Error())
			return fail(reason, err.Error())
		}
	case len(c.Command) > 0:
		cmd := expandAll(c.Command, env)
		path = cmd[0]
		args = append(cmd[1:], expandAll(c.Args, env)...)
	case isMapped:
		path = mapped
		args = expandAll(c.Args, env)
	default:
		msg := fmt.Sprintf("image %q is not mapped to a local executable (see %s) and the node has no runc", c.Image, w.node.cfg.ImagesFile)
		w.setContainerWaiting(c.Name, "ErrImagePull", msg)
		return fail("ErrImagePull", msg)
	}
	if !useRunc && !strings.Contains(path, "/") {
		found, err := exec.LookPath(path)
		if err != nil {
			msg := fmt.Sprintf("executable %q not found on the node: %v", path, err)
			w.setContainerWaiting(c.Name, "RunContainerError", msg)
			return fail("RunContainerError", msg)
		}
		path = found
	}

	cdir := filepath.Join(w.dir, "containers", c.Name)
	_ = os.MkdirAll(cdir, 0o755)
	termPath := c.TerminationMessagePath
	if termPath == "" {
		termPath = corev1.TerminationMessagePathDefault
	}
	termFile := filepath.Join(cdir, fmt.Sprintf("termination-%d", attempt))
	_ = os.WriteFile(termFile, nil, 0o666)
	// Whatever user the container runs as writes its termination message, as on a kubelet.
	_ = os.Chmod(termFile, 0o666)

	var mounts []Mount
	for _, vm := range c.VolumeMounts {
		src, ok := podMounts[vm.Name]
		if !ok {
			msg := fmt.Sprintf("volume %q is not defined in the pod", vm.Name)
			w.setContainerWaiting(c.Name, "CreateContainerConfigError", msg)
			return fail("CreateContainerConfigError", msg)
		}
		source := src.path
		if vm.SubPath != "" {
			source = filepath.Join(source, vm.SubPath)
		}
		st, _ := os.Stat(source)
		mounts = append(mounts, Mount{Source: source, Target: vm.MountPath, ReadOnly: vm.ReadOnly || src.readOnly, File: st != nil && !st.IsDir()})
	}
	mounts = append(mounts, Mount{Source: termFile, Target: termPath, File: true})

	logFile, err := os.OpenFile(w.node.logPath(pod, c.Name), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return fail("RunContainerError", err.Error())
	}
	defer logFile.Close()
	var cmd *exec.Cmd
	var ctr *runcContainer
	if useRunc {
		ctr, err = w.prepareRunc(c, img, env, mounts, cdir, attempt)
		if err != nil {
			w.setContainerWaiting(c.Name, "CreateContainerConfigError", err.Error())
			return fail("CreateContainerConfigError", err.Error())
		}
		defer ctr.cleanup()
		cmd = ctr.command()
	} else {
		spec := ShimSpec{Mounts: mounts, WorkingDir: c.WorkingDir, Path: path, Args: args}
		specPath := filepath.Join(cdir, "shim.json")
		data, _ := json.Marshal(spec)
		if err := os.WriteFile(specPath, data, 0o600); err != nil {
			return fail("RunContainerError", err.Error())
		}
		self, _ := os.Executable()
		cmd = exec.Command(self, "exec-container", specPath)
		cmd.Env = env
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS, Setpgid: true, Pdeathsig: syscall.SIGKILL}
	}
	cmd.Stdout = logFile
	cmd.Stderr = logFile

	w.mu.Lock()
	if w.stopping {
		w.mu.Unlock()
		return fail("Killed", "pod deleted before the container started")
	}
	if err := cmd.Start(); err != nil {
		w.mu.Unlock()
		return fail("RunContainerError", err.Error())
	}
	p := &proc{pid: cmd.Process.Pid}
	containerID := fmt.Sprintf("ground://%d", cmd.Process.Pid)
	if ctr != nil {
		p.runc, p.root, p.runcID = ctr.runc, ctr.root, ctr.id
		containerID = "runc://" + ctr.id
	}
	w.procs[c.Name] = p
	started = metav1.Now()
	if !init {
		st := w.statuses[c.Name]
		st.ContainerID = containerID
		if img != nil {
			st.ImageID = img.Digest
		}
		st.Ready = true
		st.Started = boolPtr(true)
		st.State = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: started}}
	}
	w.mu.Unlock()
	pidFile := filepath.Join(w.node.cfg.PidDir, fmt.Sprintf("pod-%d.pid", cmd.Process.Pid))
	_ = os.WriteFile(pidFile, []byte(fmt.Sprint(cmd.Process.Pid)), 0o644)
	if !init {
		w.report(ctx, corev1.PodRunning, "")
	}

	waitErr := cmd.Wait()
	finished = metav1.Now()
	_ = os.Remove(pidFile)
	w.mu.Lock()
	delete(w.procs, c.Name)
	w.mu.Unlock()

	code = 0
	if waitErr != nil {
		if ee, ok := waitErr.(*exec.ExitError); ok {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				code = 128 + int32(ws.Signal())
			} else {
				code = int32(ee.ExitCode())
			}
		} else {
			code = 128
		}
	}
	msgBytes, _ := os.ReadFile(termFile)
	message = string(msgBytes)
	if len(message) > 4096 {
		message = message[:4096]
	}
	if message == "" && code != 0 && c.TerminationMessagePolicy == corev1.TerminationMessageFallbackToLogsOnError {
		message = tailFile(w.node.logPath(pod, c.Name), 80, 2048)
	}
	reason = "Completed"
	if code != 0 {
		reason = "Error"
	}
	if code == 137 && w.isStopping() {
		reason = "Killed"
	}
	if ctr != nil && code != 0 && ctr.oomKilled() {
		reason = "OOMKilled"
	}
	return code, started, finished, message, reason
}

func (w *podWorker) setContainerWaiting(name, reason, message string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if st, ok := w.statuses[name]; ok {
		st.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: message}}
	}
}

func tailFile(path string, lines, maxBytes int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	parts := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	out := strings.Join(parts, "\n")
	if len(out) > maxBytes {
		out = out[len(out)-maxBytes:]
	}
	return out
}

// report writes the pod's status: phase, conditions and container states.
func (w *podWorker) report(ctx context.Context, phase corev1.PodPhase, message string) {
	statuses := w.snapshotStatuses()
	pods := w.node.client.CoreV1().Pods(w.pod.Namespace)
	update := func() error {
		cur, err := pods.Get(ctx, w.pod.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if cur.UID != w.pod.UID {
			return nil
		}
		now := metav1.Now()
		st := &cur.Status
		st.Phase = phase
		st.Message = message
		st.HostIP = "127.0.0.1"
		st.HostIPs = []corev1.HostIP{{IP: "127.0.0.1"}}
		st.PodIP = "127.0.0.1"
		st.PodIPs = []corev1.PodIP{{IP: "127.0.0.1"}}
		if st.StartTime == nil {
			st.StartTime = &now
		}
		st.ContainerStatuses = statuses
		ready := phase == corev1.PodRunning
		for _, cs := range statuses {
			if !cs.Ready {
				ready = false
			}
		}
		initialized := phase != corev1.PodPending
		setCond(st, corev1.PodScheduled, true, now)
		setCond(st, corev1.PodInitialized, initialized || len(w.pod.Spec.InitContainers) == 0, now)
		setCond(st, corev1.ContainersReady, ready, now)
		setCond(st, corev1.PodReady, ready, now)
		_, err = pods.UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		return err
	}
	err := retry.RetryOnConflict(retry.DefaultBackoff, update)
	// A kubelet keeps a pod's status in sync whatever happens to the API server: a final status
	// lost while it restarts would leave the pod Running, and its Job waiting, for ever.
	for wait := 200 * time.Millisecond; err != nil && !apierrors.IsNotFound(err) && ctx.Err() == nil; wait = min(2*wait, 5*time.Second) {
		log.Printf("node: failed to update status of pod %s/%s (trying again): %v", w.pod.Namespace, w.pod.Name, err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		err = retry.RetryOnConflict(retry.DefaultBackoff, update)
	}
}

func setCond(st *corev1.PodStatus, t corev1.PodConditionType, ok bool, now metav1.Time) {
	status := corev1.ConditionFalse
	if ok {
		status = corev1.ConditionTrue
	}
	for i := range st.Conditions {
		if st.Conditions[i].Type == t {
			if st.Conditions[i].Status != status {
				st.Conditions[i].Status = status
				st.Conditions[i].LastTransitionTime = now
			}
			return
		}
	}
	st.Conditions = append(st.Conditions, corev1.PodCondition{Type: t, Status: status, LastTransitionTime: now})
}

// requestToken asks the API server for a token of the pod's service account, bound to the pod.
func (w *podWorker) requestToken(ctx context.Context, audiences []string, seconds int64) (string, error) {
	sa := w.pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences:         audiences,
		ExpirationSeconds: &seconds,
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: w.pod.Name, UID: w.pod.UID},
	}}
	resp, err := w.node.client.CoreV1().ServiceAccounts(w.pod.Namespace).CreateToken(ctx, sa, req, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("failed to request a token for service account %s/%s: %w", w.pod.Namespace, sa, err)
	}
	return resp.Status.Token, nil
}

// writeKubeconfig gives the process a kubeconfig that carries its own service-account token.
func (w *podWorker) writeKubeconfig(ctx context.Context) (string, error) {
	token, err := w.requestToken(ctx, nil, 24*3600)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(w.dir, "kube")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token), 0o644); err != nil {
		return "", err
	}
	path := filepath.Join(dir, "kubeconfig")
	err = cluster.WriteKubeconfig(path, w.node.cfg.APIServer, w.node.cfg.CAFile, cluster.Auth{TokenFile: tokenFile, Namespace: w.pod.Namespace})
	return path, err
}
