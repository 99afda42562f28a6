// Package node is the ground's local node: it registers a Ready Node, binds pending pods to it and
// runs each pod's containers, with runc from their registry images (runc.go) or, for images the
// images file maps, as local processes, reporting their state back like a kubelet.
package node

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// Config is what the node needs to know about the ground.
type Config struct {
	Name       string
	StateDir   string // pods/ and logs/ live here
	APIServer  string
	CAFile     string
	ImagesFile string // JSON object: image repository -> local executable
	PidDir     string
	// Runc runs the images that the images file does not map; empty: every image must be mapped.
	Runc string
	// ForwardPorts are the host's loopback ports (API server, S3 servers) that pods in network
	// namespaces of their own reach at the same 127.0.0.1 address.
	ForwardPorts []int
}

// Node runs pods.
type Node struct {
	cfg    Config
	client kubernetes.Interface
	mu     sync.Mutex
	pods   map[types.UID]*podWorker
	store  *imageStore
}

// New makes a node.
func New(cfg Config, client kubernetes.Interface) *Node {
	return &Node{cfg: cfg, client: client, pods: map[types.UID]*podWorker{}, store: newImageStore(filepath.Join(cfg.StateDir, "images"))}
}

// runcRoot is where runc keeps the state of this node's containers.
func (n *Node) runcRoot() string { return filepath.Join(n.cfg.StateDir, "runc") }

// Run registers the node and serves pods until ctx ends; then it stops every pod's processes.
func (n *Node) Run(ctx context.Context) error {
	if err := n.register(ctx); err != nil {
		return err
	}
	go n.heartbeat(ctx)

	factory := informers.NewSharedInformerFactory(n.client, 0)
	podInformer := factory.Core().V1().Pods().Informer()
	_, err := podInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { n.onPod(ctx, obj.(*corev1.Pod)) },
		UpdateFunc: func(_, obj any) { n.onPod(ctx, obj.(*corev1.Pod)) },
		DeleteFunc: func(obj any) {
			pod, ok := obj.(*corev1.Pod)
			if !ok {
				if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
					pod, _ = tomb.Obj.(*corev1.Pod)
				}
			}
			if pod != nil {
				n.onPodGone(pod)
			}
		},
	})
	if err != nil {
		return err
	}
	factory.Start(ctx.Done())
	<-ctx.Done()
	n.stopAll()
	cleanupCgroups(n.cfg.StateDir)
	return nil
}

func (n *Node) register(ctx context.Context) error {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: n.cfg.Name, Labels: map[string]string{
			"kubernetes.io/hostname": n.cfg.Name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
		}},
	}
	created, err := n.client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		created, err = n.client.CoreV1().Nodes().Get(ctx, n.cfg.Name, metav1.GetOptions{})
	}
	if err != nil {
		return fmt.Errorf("failed to register node: %w", err)
	}
	now := metav1.Now()
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:              resource.MustParse("16"),
		corev1.ResourceMemory:           resource.MustParse("64Gi"),
		corev1.ResourcePods:             resource.MustParse("2000"),
		corev1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
	}
	created.Status = corev1.NodeStatus{
		Capacity:    capacity,
		Allocatable: capacity,
		Phase:       corev1.NodeRunning,
		Conditions: []corev1.NodeCondition{
			{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", Message: "the ground's local node runs registry images with runc, mapped images as processes", LastHeartbeatTime: now, LastTransitionTime: now},
			{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientMemory", LastHeartbeatTime: now, LastTransitionTime: now},
			{Type: corev1.NodeDiskPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasNoDiskPressure", LastHeartbeatTime: now, LastTransitionTime: now},
			{Type: corev1.NodePIDPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientPID", LastHeartbeatTime: now, LastTransitionTime: now},
		},
		Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}, {Type: corev1.NodeHostName, Address: n.cfg.Name}},
		NodeInfo:  corev1.NodeSystemInfo{OperatingSystem: "linux", Architecture: "amd64", KubeletVersion: "ground", ContainerRuntimeVersion: "ground-process://1"},
	}
	_, err = n.client.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{})
	return err
}

// heartbeat renews the node's Lease, as a kubelet does.
func (n *Node) heartbeat(ctx context.Context) {
	leases := n.client.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	holder := n.cfg.Name
	seconds := int32(40)
	for {
		now := metav1.NewMicroTime(time.Now())
		lease, err := leases.Get(ctx, n.cfg.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			_, _ = leases.Create(ctx, &coordinationv1.Lease{
				ObjectMeta: metav1.ObjectMeta{Name: n.cfg.Name},
				Spec:       coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &seconds, RenewTime: &now},
			}, metav1.CreateOptions{})
		} else if err == nil {
			lease.Spec.RenewTime = &now
			_, _ = leases.Update(ctx, lease, metav1.UpdateOptions{})
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(10 * time.Second):
		}
	}
}

func (n *Node) onPod(ctx context.Context, pod *corev1.Pod) {
	if pod.Spec.NodeName == "" {
		// The ground has no scheduler: every pod for the default scheduler lands on this node.
		if pod.Spec.SchedulerName == "" || pod.Spec.SchedulerName == corev1.DefaultSchedulerName {
			if pod.DeletionTimestamp == nil {
				n.bind(ctx, pod)
			}
		}
		return
	}
	if pod.Spec.NodeName != n.cfg.Name {
		return
	}
	n.mu.Lock()
	w, ok := n.pods[pod.UID]
	if !ok {
		if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			n.mu.Unlock()
			if pod.DeletionTimestamp != nil {
				n.finalDelete(ctx, pod)
			}
			return
		}
		w = newPodWorker(n, pod)
		n.pods[pod.UID] = w
		n.mu.Unlock()
		go w.run(ctx)
		return
	}
	n.mu.Unlock()
	if pod.DeletionTimestamp != nil {
		w.requestStop(pod)
	}
}

func (n *Node) onPodGone(pod *corev1.Pod) {
	n.mu.Lock()
	w, ok := n.pods[pod.UID]
	n.mu.Unlock()
	if ok {
		w.requestStop(nil)
	}
}

func (n *Node) forget(uid types.UID) {
	n.mu.Lock()
	delete(n.pods, uid)
	n.mu.Unlock()
}

func (n *Node) bind(ctx context.Context, pod *corev1.Pod) {
	binding := &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID},
		Target:     corev1.ObjectReference{Kind: "Node", Name: n.cfg.Name},
	}
	err := n.client.CoreV1().Pods(pod.Namespace).Bind(ctx, binding, metav1.CreateOptions{})
	if err != nil && !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) {
		log.Printf("node: failed to bind pod %s/%s: %v", pod.Namespace, pod.Name, err)
	}
}

// finalDelete is the kubelet's last word on a pod: once its processes are gone, the pod object
// is removed for good.
func (n *Node) finalDelete(ctx context.Context, pod *corev1.Pod) {
	zero := int64(0)
	uid := pod.UID
	err := n.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero, Preconditions: &metav1.Preconditions{UID: &uid}})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		log.Printf("node: failed to delete pod %s/%s: %v", pod.Namespace, pod.Name, err)
	}
}

func (n *Node) stopAll() {
	n.mu.Lock()
	workers := make([]*podWorker, 0, len(n.pods))
	for _, w := range n.pods {
		workers = append(workers, w)
	}
	n.mu.Unlock()
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Add(1)
		go func() { defer wg.Done(); w.killNow() }()
	}
	wg.Wait()
}

// images reads the image map fresh each time so tests can point an image at a new binary.
func (n *Node) images() map[string]string {
	out := map[string]string{}
	data, err := os.ReadFile(n.cfg.ImagesFile)
	if err == nil {
		_ = json.Unmarshal(data, &out)
	}
	return out
}

// resolveImage maps an image reference to a local executable: the repository (tag and digest
// dropped) is looked up, then the full reference.
func (n *Node) resolveImage(image string) (string, bool) {
	m := n.images()
	if p, ok := m[image]; ok {
		return p, true
	}
	repo := image
	if i := strings.Index(repo, "@"); i >= 0 {
		repo = repo[:i]
	}
	if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
		repo = repo[:i]
	}
	p, ok := m[repo]
	return p, ok
}

func (n *Node) podDir(pod *corev1.Pod) string {
	return filepath.Join(n.cfg.StateDir, "pods", fmt.Sprintf("%s_%s_%s", pod.Namespace, pod.Name, pod.UID))
}

func (n *Node) logPath(pod *corev1.Pod, container string) string {
	return filepath.Join(n.cfg.StateDir, "logs", "pods", fmt.Sprintf("%s_%s_%s.log", pod.Namespace, pod.Name, container))
}
