// Package e2e proves the ground: real Jobs run on the local node, service-account tokens carry
// exactly their RBAC, the garbage collector stops pods, and both S3 servers behave as S3 does.
package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

func mustEnv(t *testing.T, name string) string {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		t.Fatalf("%s is not set: run `make ground-up` and `source tests/ground/.state/env` first", name)
	}
	return v
}

func client(t *testing.T) kubernetes.Interface {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", mustEnv(t, "KUBECONFIG"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// namespace makes a fresh namespace (deleted at the end) and waits for its default service account.
func namespace(t *testing.T, c kubernetes.Interface) string {
	t.Helper()
	ctx := context.Background()
	name := "ground-" + rand.String(6)
	if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{}) })
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := c.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	if err != nil {
		t.Fatalf("default service account of %s never appeared: %v", name, err)
	}
	return name
}

func shJob(name string, script string, backoff int32) *batchv1.Job {
	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: batchv1.JobSpec{
			BackoffLimit: &backoff,
			Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
				RestartPolicy: corev1.RestartPolicyNever,
				Containers: []corev1.Container{{
					Name: "main", Image: "busybox:1.37", Command: []string{"sh", "-c", script},
				}},
			}},
		},
	}
}

func waitJob(t *testing.T, c kubernetes.Interface, ns, name string, want batchv1.JobConditionType, timeout time.Duration) *batchv1.Job {
	t.Helper()
	var job *batchv1.Job
	err := wait.PollUntilContextTimeout(context.Background(), 300*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		j, err := c.BatchV1().Jobs(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		job = j
		for _, cond := range j.Status.Conditions {
			if cond.Status == corev1.ConditionTrue && (cond.Type == batchv1.JobComplete || cond.Type == batchv1.JobFailed) {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("job %s/%s did not finish in %s: %+v", ns, name, timeout, job.Status)
	}
	for _, cond := range job.Status.Conditions {
		if cond.Type == want && cond.Status == corev1.ConditionTrue {
			return job
		}
	}
	t.Fatalf("job %s/%s finished without %s: %+v", ns, name, want, job.Status.Conditions)
	return nil
}

func jobPods(t *testing.T, c kubernetes.Interface, ns, job string) []corev1.Pod {
	t.Helper()
	pods, err := c.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "job-name=" + job})
	if err != nil {
		t.Fatal(err)
	}
	return pods.Items
}

func TestServerReportsItsRealVersion(t *testing.T) {
	c := client(t)
	v, err := c.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("../KUBERNETES_VERSION")
	if err != nil {
		t.Fatal(err)
	}
	if v.GitVersion != strings.TrimSpace(string(want)) {
		t.Fatalf("server reports %q, want %q", v.GitVersion, strings.TrimSpace(string(want)))
	}
}

func TestNodeIsReady(t *testing.T) {
	c := client(t)
	n, err := c.CoreV1().Nodes().Get(context.Background(), mustEnv(t, "GROUND_NODE"), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, cond := range n.Status.Conditions {
		if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
			return
		}
	}
	t.Fatalf("node not Ready: %+v", n.Status.Conditions)
}

// A pod reads a Secret through env and a file from a read-only PVC, writes a termination
// message and exits 0: the Job completes and the message is on the pod's status.
func TestJobWithSecretEnvAndPVC(t *testing.T) {
	c := client(t)
	ctx := context.Background()
	ns := namespace(t, c)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "input.txt"), []byte("from-the-claim"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "creds"}, StringData: map[string]string{"token": "s3cr3t-value"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pvName := "pv-" + ns
	if _, err := c.CoreV1().PersistentVolumes().Create(ctx, &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: pvName},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			PersistentVolumeSource:        corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: dir}},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.CoreV1().PersistentVolumes().Delete(context.Background(), pvName, metav1.DeleteOptions{})
	})
	empty := ""
	if _, err := c.CoreV1().PersistentVolumeClaims(ns).Create(ctx, &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "data"},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany},
			StorageClassName: &empty,
			VolumeName:       pvName,
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	script := `set -e
test "$TOKEN" = "s3cr3t-value"
test "$POD_NAMESPACE" = "` + ns + `"
if touch /data/should-fail 2>/dev/null; then echo "read-only mount was writable" >&2; exit 9; fi
test "$(pwd)" = /work
printf 'ok:%s' "$(cat /data/input.txt)" > /dev/termination-log`
	job := shJob("reader", script, 0)
	spec := &job.Spec.Template.Spec
	spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
		PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data", ReadOnly: true}}}}
	ctr := &spec.Containers[0]
	ctr.WorkingDir = "/work"
	ctr.VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data", ReadOnly: true}}
	ctr.Env = []corev1.EnvVar{
		{Name: "TOKEN", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: "creds"}, Key: "token"}}},
		{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
	}
	if _, err := c.BatchV1().Jobs(ns).Create(ctx, job, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitJob(t, c, ns, "reader", batchv1.JobComplete, 90*time.Second)
	pods := jobPods(t, c, ns, "reader")
	if len(pods) != 1 {
		t.Fatalf("want 1 pod, got %d", len(pods))
	}
	st := pods[0].Status
	if st.Phase != corev1.PodSucceeded {
		t.Fatalf("pod phase %s", st.Phase)
	}
	term := st.ContainerStatuses[0].State.Terminated
	if term == nil || term.ExitCode != 0 || term.Message != "ok:from-the-claim" {
		t.Fatalf("unexpected container state: %+v", st.ContainerStatuses[0].State)
	}
	if _, err := os.Stat(filepath.Join(dir, "should-fail")); err == nil {
		t.Fatal("the read-only claim was written to")
	}
}

// A pod that exits non-zero is retried up to backoffLimit and the Job ends Failed.
func TestJobRetriesUpToBackoffLimit(t *testing.T) {
	c := client(t)
	ns := namespace(t, c)
	if _, err := c.BatchV1().Jobs(ns).Create(context.Background(), shJob("failing", "echo boom >&2; exit 3", 2), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitJob(t, c, ns, "failing", batchv1.JobFailed, 180*time.Second)
	pods := jobPods(t, c, ns, "failing")
	if len(pods) != 3 {
		t.Fatalf("backoffLimit 2 should give 3 pods, got %d", len(pods))
	}
	for _, p := range pods {
		term := p.Status.ContainerStatuses[0].State.Terminated
		if p.Status.Phase != corev1.PodFailed || term == nil || term.ExitCode != 3 {
			t.Fatalf("pod %s: phase %s state %+v", p.Name, p.Status.Phase, p.Status.ContainerStatuses[0].State)
		}
	}
}

// A pod's service-account token may do what its Role allows and gets 403 for the rest.
func TestServiceAccountTokenHasExactlyItsRBAC(t *testing.T) {
	c := client(t)
	ctx := context.Background()
	ns := namespace(t, c)
	if _, err := c.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "reader"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "allowed"}, Data: map[string]string{"k": "v"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "read-cm"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get"}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "read-cm"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "read-cm"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "reader", Namespace: ns}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	script := `set -e
who=$(kubectl auth whoami -o jsonpath='{.status.userInfo.username}')
kubectl get configmap allowed -o jsonpath='{.data.k}' > /tmp/cm-` + ns + `
if kubectl get secrets 2>/tmp/err-` + ns + `; then echo "listing secrets was allowed" >&2; exit 7; fi
grep -q Forbidden /tmp/err-` + ns + `
printf '%s|%s' "$who" "$(cat /tmp/cm-` + ns + `)" > /dev/termination-log`
	job := shJob("rbac", script, 0)
	job.Spec.Template.Spec.ServiceAccountName = "reader"
	if _, err := c.BatchV1().Jobs(ns).Create(ctx, job, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitJob(t, c, ns, "rbac", batchv1.JobComplete, 90*time.Second)
	pods := jobPods(t, c, ns, "rbac")
	msg := pods[0].Status.ContainerStatuses[0].State.Terminated.Message
	if want := "system:serviceaccount:" + ns + ":reader|v"; msg != want {
		t.Fatalf("termination message %q, want %q", msg, want)
	}
}

// Deleting a Job deletes its pods through the garbage collector and stops their processes.
func TestDeletingJobStopsItsProcesses(t *testing.T) {
	c := client(t)
	ctx := context.Background()
	ns := namespace(t, c)
	if _, err := c.BatchV1().Jobs(ns).Create(ctx, shJob("sleeper", "trap 'exit 0' TERM; sleep 600 & wait", 0), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var pid int
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		for _, p := range jobPods(t, c, ns, "sleeper") {
			for _, cs := range p.Status.ContainerStatuses {
				if cs.State.Running != nil && strings.HasPrefix(cs.ContainerID, "ground://") {
					pid, _ = strconv.Atoi(strings.TrimPrefix(cs.ContainerID, "ground://"))
					return pid > 0, nil
				}
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("the sleeper pod never ran: %v", err)
	}
	if syscall.Kill(pid, 0) != nil {
		t.Fatalf("process %d of the running pod is not alive", pid)
	}
	// The children of the shell (sleep) share its process group.
	bg := metav1.DeletePropagationBackground
	if err := c.BatchV1().Jobs(ns).Delete(ctx, "sleeper", metav1.DeleteOptions{PropagationPolicy: &bg}); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		return len(jobPods(t, c, ns, "sleeper")) == 0, nil
	})
	if err != nil {
		t.Fatalf("pods of the deleted job remain: %v", err)
	}
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		return syscall.Kill(-pid, 0) != nil, nil
	})
	if err != nil {
		t.Fatalf("process group %d still alive after its pod was deleted", pid)
	}
	fmt.Fprintf(os.Stderr, "pod process %d stopped\n", pid)
}
