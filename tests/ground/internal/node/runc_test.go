package node

import (
	"slices"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

func ptr[T any](v T) *T { return &v }

// The upload Job's pod, as src/job.rs builds it, becomes the spec a kubelet and containerd would
// give runc.
func TestUploadPodSpec(t *testing.T) {
	pod := &corev1.Pod{Spec: corev1.PodSpec{SecurityContext: &corev1.PodSecurityContext{
		RunAsNonRoot: ptr(true), RunAsUser: ptr(int64(65532)), RunAsGroup: ptr(int64(65532)),
		FSGroup: ptr(int64(4242)), SupplementalGroups: []int64{7},
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}}}
	pod.Name = "upload-0"
	c := corev1.Container{
		Name: "upload", Args: []string{"upload", "$(OUTBOUND_BUCKET)"},
		Env: []corev1.EnvVar{{Name: "PATH", Value: "/pod"}},
		SecurityContext: &corev1.SecurityContext{
			AllowPrivilegeEscalation: ptr(false), ReadOnlyRootFilesystem: ptr(true),
			Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}, Add: []corev1.Capability{"NET_BIND_SERVICE"}},
		},
		Resources: corev1.ResourceRequirements{
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi"), corev1.ResourceCPU: resource.MustParse("500m")},
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m")},
		},
	}
	img := &pulledImage{Rootfs: t.TempDir(), Config: v1.Config{
		User: "65532:65532", Entrypoint: []string{"/usr/local/bin/outbound"}, Cmd: []string{"--help"},
		Env: []string{"PATH=/image", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"},
	}}
	sec, err := securityOf(pod, c)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := runcSpec(pod, c, img, sec, []string{"PATH=/pod", "OUTBOUND_BUCKET=b"},
		[]Mount{{Source: "/pv", Target: "/source", ReadOnly: true}}, "/rootfs", "/g/x", "/run/netns/x")
	if err != nil {
		t.Fatal(err)
	}
	p := spec.Process
	if p.User.UID != 65532 || p.User.GID != 65532 || !slices.Equal(p.User.AdditionalGids, []uint32{4242, 7}) {
		t.Errorf("user %+v", p.User)
	}
	if !slices.Equal(p.Args, []string{"/usr/local/bin/outbound", "upload", "b"}) {
		t.Errorf("args %q: args replace the image's cmd, after the entrypoint", p.Args)
	}
	if !slices.Equal(p.Env, []string{"PATH=/pod", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt", "OUTBOUND_BUCKET=b"}) {
		t.Errorf("env %q", p.Env)
	}
	if !p.NoNewPrivileges || !spec.Root.Readonly {
		t.Errorf("no_new_privs %v, read-only root %v", p.NoNewPrivileges, spec.Root.Readonly)
	}
	if !slices.Equal(p.Capabilities.Bounding, []string{"CAP_NET_BIND_SERVICE"}) {
		t.Errorf("capabilities %q", p.Capabilities.Bounding)
	}
	r := spec.Linux.Resources
	if *r.Memory.Limit != 128<<20 || *r.CPU.Quota != 50000 || *r.CPU.Period != 100000 || *r.CPU.Shares != 256 {
		t.Errorf("limits: memory %d, quota %d/%d, shares %d", *r.Memory.Limit, *r.CPU.Quota, *r.CPU.Period, *r.CPU.Shares)
	}
	if spec.Linux.Seccomp == nil || spec.Linux.Seccomp.DefaultAction != specs.ActAllow || !slices.Contains(spec.Linux.Seccomp.Syscalls[0].Names, "unshare") {
		t.Errorf("seccomp %+v", spec.Linux.Seccomp)
	}
	if !slices.Contains(spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: "/run/netns/x"}) {
		t.Errorf("namespaces %+v", spec.Linux.Namespaces)
	}
	last := spec.Mounts[len(spec.Mounts)-1]
	if last.Destination != "/source" || !slices.Contains(last.Options, "ro") {
		t.Errorf("volume mount %+v", last)
	}
}

// Defaults: the image's user, containerd's capabilities, no seccomp, a writable root; a pod that
// must not run as root refuses an image that would.
func TestDefaultsAndRunAsNonRoot(t *testing.T) {
	pod := &corev1.Pod{}
	c := corev1.Container{Name: "c", Command: []string{"sh"}}
	img := &pulledImage{Rootfs: t.TempDir(), Config: v1.Config{Entrypoint: []string{"/bin/sh"}, Cmd: []string{"-c", "x"}}}
	sec, _ := securityOf(pod, c)
	spec, err := runcSpec(pod, c, img, sec, nil, nil, "/rootfs", "/g/x", "")
	if err != nil {
		t.Fatal(err)
	}
	if spec.Process.User.UID != 0 || spec.Root.Readonly || spec.Linux.Seccomp != nil || spec.Process.NoNewPrivileges {
		t.Errorf("defaults: %+v %+v", spec.Process.User, spec.Root)
	}
	if !slices.Equal(spec.Process.Args, []string{"sh"}) || len(spec.Process.Capabilities.Bounding) != len(runtimeDefaultCaps) {
		t.Errorf("args %q caps %q", spec.Process.Args, spec.Process.Capabilities.Bounding)
	}
	for _, ns := range spec.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			t.Errorf("a host-network pod got a network namespace")
		}
	}
	pod.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsNonRoot: ptr(true)}
	sec, _ = securityOf(pod, c)
	if _, err := runcSpec(pod, c, img, sec, nil, nil, "/rootfs", "/g/x", ""); err == nil {
		t.Errorf("runAsNonRoot with an image running as root was accepted")
	}
}
