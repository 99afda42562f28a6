package node

// Volumes and environment of a pod: what the kubelet would assemble before starting containers.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

type volumeSource struct {
	path     string
	readOnly bool
}

// prepareVolumes materialises every volume of the pod as a host folder.
func (w *podWorker) prepareVolumes(ctx context.Context) (map[string]volumeSource, error) {
	out := map[string]volumeSource{}
	base := filepath.Join(w.dir, "volumes")
	for _, v := range w.pod.Spec.Volumes {
		dir := filepath.Join(base, v.Name)
		switch {
		case v.EmptyDir != nil:
			if err := os.MkdirAll(dir, 0o777); err != nil {
				return nil, err
			}
			out[v.Name] = volumeSource{path: dir}
		case v.HostPath != nil:
			out[v.Name] = volumeSource{path: v.HostPath.Path}
		case v.PersistentVolumeClaim != nil:
			path, err := w.claimPath(ctx, v.PersistentVolumeClaim.ClaimName)
			if err != nil {
				return nil, err
			}
			out[v.Name] = volumeSource{path: path, readOnly: v.PersistentVolumeClaim.ReadOnly}
		case v.Secret != nil:
			secret, err := w.node.client.CoreV1().Secrets(w.pod.Namespace).Get(ctx, v.Secret.SecretName, metav1.GetOptions{})
			if err != nil {
				if apierrors.IsNotFound(err) && v.Secret.Optional != nil && *v.Secret.Optional {
					secret = &corev1.Secret{}
				} else {
					return nil, fmt.Errorf("failed to mount secret %q: %w", v.Secret.SecretName, err)
				}
			}
			if err := writeKeys(dir, secret.Data, v.Secret.Items, v.Secret.DefaultMode); err != nil {
				return nil, err
			}
			out[v.Name] = volumeSource{path: dir, readOnly: true}
		case v.ConfigMap != nil:
			cm, err := w.node.client.CoreV1().ConfigMaps(w.pod.Namespace).Get(ctx, v.ConfigMap.Name, metav1.GetOptions{})
			if err != nil {
				if apierrors.IsNotFound(err) && v.ConfigMap.Optional != nil && *v.ConfigMap.Optional {
					cm = &corev1.ConfigMap{}
				} else {
					return nil, fmt.Errorf("failed to mount configmap %q: %w", v.ConfigMap.Name, err)
				}
			}
			if err := writeKeys(dir, configMapData(cm), v.ConfigMap.Items, v.ConfigMap.DefaultMode); err != nil {
				return nil, err
			}
			out[v.Name] = volumeSource{path: dir, readOnly: true}
		case v.DownwardAPI != nil:
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return nil, err
			}
			for _, item := range v.DownwardAPI.Items {
				if err := w.writeDownward(dir, item); err != nil {
					return nil, err
				}
			}
			out[v.Name] = volumeSource{path: dir, readOnly: true}
		case v.Projected != nil:
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return nil, err
			}
			for _, src := range v.Projected.Sources {
				if err := w.writeProjected(ctx, dir, src); err != nil {
					return nil, err
				}
			}
			out[v.Name] = volumeSource{path: dir, readOnly: true}
		default:
			return nil, fmt.Errorf("volume %q: this kind of volume is not supported by the ground's node", v.Name)
		}
	}
	return out, nil
}

// claimPath follows a claim to its bound PersistentVolume and that volume's local folder.
func (w *podWorker) claimPath(ctx context.Context, claim string) (string, error) {
	pvc, err := w.node.client.CoreV1().PersistentVolumeClaims(w.pod.Namespace).Get(ctx, claim, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("failed to get persistentvolumeclaim %q: %w", claim, err)
	}
	if pvc.Status.Phase != corev1.ClaimBound || pvc.Spec.VolumeName == "" {
		return "", fmt.Errorf("persistentvolumeclaim %q is not bound yet", claim)
	}
	pv, err := w.node.client.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("failed to get persistentvolume %q: %w", pvc.Spec.VolumeName, err)
	}
	switch {
	case pv.Spec.HostPath != nil:
		return pv.Spec.HostPath.Path, os.MkdirAll(pv.Spec.HostPath.Path, 0o777)
	case pv.Spec.Local != nil:
		return pv.Spec.Local.Path, nil
	}
	return "", fmt.Errorf("persistentvolume %q has neither hostPath nor local: the ground cannot mount it", pv.Name)
}

func configMapData(cm *corev1.ConfigMap) map[string][]byte {
	data := map[string][]byte{}
	for k, v := range cm.Data {
		data[k] = []byte(v)
	}
	for k, v := range cm.BinaryData {
		data[k] = v
	}
	return data
}

func writeKeys(dir string, data map[string][]byte, items []corev1.KeyToPath, mode *int32) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	perm := os.FileMode(0o644)
	if mode != nil {
		perm = os.FileMode(*mode)
	}
	if len(items) == 0 {
		for k, v := range data {
			if err := os.WriteFile(filepath.Join(dir, k), v, perm); err != nil {
				return err
			}
		}
		return nil
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			return fmt.Errorf("key %q not found", it.Key)
		}
		p := filepath.Join(dir, it.Path)
		_ = os.MkdirAll(filepath.Dir(p), 0o755)
		m := perm
		if it.Mode != nil {
			m = os.FileMode(*it.Mode)
		}
		if err := os.WriteFile(p, v, m); err != nil {
			return err
		}
	}
	return nil
}

func (w *podWorker) writeDownward(dir string, item corev1.DownwardAPIVolumeFile) error {
	value := ""
	if item.FieldRef != nil {
		v, err := w.fieldValue(item.FieldRef.FieldPath)
		if err != nil {
			return err
		}
		value = v
	}
	p := filepath.Join(dir, item.Path)
	_ = os.MkdirAll(filepath.Dir(p), 0o755)
	return os.WriteFile(p, []byte(value), 0o644)
}

func (w *podWorker) writeProjected(ctx context.Context, dir string, src corev1.VolumeProjection) error {
	switch {
	case src.ServiceAccountToken != nil:
		seconds := int64(3600)
		if src.ServiceAccountToken.ExpirationSeconds != nil {
			seconds = *src.ServiceAccountToken.ExpirationSeconds
		}
		var aud []string
		if src.ServiceAccountToken.Audience != "" {
			aud = []string{src.ServiceAccountToken.Audience}
		}
		token, err := w.requestToken(ctx, aud, seconds)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, src.ServiceAccountToken.Path), []byte(token), 0o644)
	case src.ConfigMap != nil:
		cm, err := w.node.client.CoreV1().ConfigMaps(w.pod.Namespace).Get(ctx, src.ConfigMap.Name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("failed to project configmap %q: %w", src.ConfigMap.Name, err)
		}
		return writeKeys(dir, configMapData(cm), src.ConfigMap.Items, nil)
	case src.Secret != nil:
		s, err := w.node.client.CoreV1().Secrets(w.pod.Namespace).Get(ctx, src.Secret.Name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("failed to project secret %q: %w", src.Secret.Name, err)
		}
		return writeKeys(dir, s.Data, src.Secret.Items, nil)
	case src.DownwardAPI != nil:
		for _, item := range src.DownwardAPI.Items {
			if err := w.writeDownward(dir, item); err != nil {
				return err
			}
		}
	}
	return nil
}

var fieldKeyRe = regexp.MustCompile(`^metadata\.(labels|annotations)\['([^']+)'\]$`)

func (w *podWorker) fieldValue(path string) (string, error) {
	p := w.pod
	switch path {
	case "metadata.name":
		return p.Name, nil
	case "metadata.namespace":
		return p.Namespace, nil
	case "metadata.uid":
		return string(p.UID), nil
	case "spec.nodeName":
		return w.node.cfg.Name, nil
	case "spec.serviceAccountName":
		return p.Spec.ServiceAccountName, nil
	case "status.podIP", "status.hostIP", "status.podIPs", "status.hostIPs":
		return "127.0.0.1", nil
	}
	if m := fieldKeyRe.FindStringSubmatch(path); m != nil {
		if m[1] == "labels" {
			return p.Labels[m[2]], nil
		}
		return p.Annotations[m[2]], nil
	}
	return "", fmt.Errorf("fieldRef %q is not supported by the ground's node", path)
}

// containerEnv builds the process environment the way the kubelet does, in order, with $(VAR)
// references to earlier variables expanded. A host process (host) also gets the host's PATH and
// a kubeconfig with the pod's token; a container finds its token where the kubelet mounts it.
func (w *podWorker) containerEnv(ctx context.Context, c corev1.Container, host bool) ([]string, error) {
	vars := map[string]string{}
	var order []string
	set := func(k, v string) {
		if _, ok := vars[k]; !ok {
			order = append(order, k)
		}
		vars[k] = v
	}
	if host {
		set("PATH", os.Getenv("PATH"))
		set("HOME", "/root")
	}
	set("HOSTNAME", w.pod.Name)
	apiHost, apiPort := splitHostPort(w.node.cfg.APIServer)
	set("KUBERNETES_SERVICE_HOST", apiHost)
	set("KUBERNETES_SERVICE_PORT", apiPort)
	automount := w.pod.Spec.AutomountServiceAccountToken == nil || *w.pod.Spec.AutomountServiceAccountToken
	if automount && host {
		kubeconfig, err := w.writeKubeconfig(ctx)
		if err != nil {
			return nil, err
		}
		set("KUBECONFIG", kubeconfig)
	}
	for _, from := range c.EnvFrom {
		var data map[string][]byte
		switch {
		case from.ConfigMapRef != nil:
			cm, err := w.node.client.CoreV1().ConfigMaps(w.pod.Namespace).Get(ctx, from.ConfigMapRef.Name, metav1.GetOptions{})
			if err != nil {
				if apierrors.IsNotFound(err) && from.ConfigMapRef.Optional != nil && *from.ConfigMapRef.Optional {
					continue
				}
				return nil, fmt.Errorf("configmap %q not found", from.ConfigMapRef.Name)
			}
			data = configMapData(cm)
		case from.SecretRef != nil:
			s, err := w.node.client.CoreV1().Secrets(w.pod.Namespace).Get(ctx, from.SecretRef.Name, metav1.GetOptions{})
			if err != nil {
				if apierrors.IsNotFound(err) && from.SecretRef.Optional != nil && *from.SecretRef.Optional {
					continue
				}
				return nil, fmt.Errorf("secret %q not found", from.SecretRef.Name)
			}
			data = s.Data
		}
		for k, v := range data {
			set(from.Prefix+k, string(v))
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			set(e.Name, expand(e.Value, vars))
			continue
		}
		vf := e.ValueFrom
		switch {
		case vf.SecretKeyRef != nil:
			ref := vf.SecretKeyRef
			optional := ref.Optional != nil && *ref.Optional
			s, err := w.node.client.CoreV1().Secrets(w.pod.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
			if err != nil {
				if optional {
					continue
				}
				return nil, fmt.Errorf("secret %q not found", ref.Name)
			}
			v, ok := s.Data[ref.Key]
			if !ok {
				if optional {
					continue
				}
				return nil, fmt.Errorf("couldn't find key %s in Secret %s/%s", ref.Key, w.pod.Namespace, ref.Name)
			}
			set(e.Name, string(v))
		case vf.ConfigMapKeyRef != nil:
			ref := vf.ConfigMapKeyRef
			optional := ref.Optional != nil && *ref.Optional
			cm, err := w.node.client.CoreV1().ConfigMaps(w.pod.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
			if err != nil {
				if optional {
					continue
				}
				return nil, fmt.Errorf("configmap %q not found", ref.Name)
			}
			v, ok := configMapData(cm)[ref.Key]
			if !ok {
				if optional {
					continue
				}
				return nil, fmt.Errorf("couldn't find key %s in ConfigMap %s/%s", ref.Key, w.pod.Namespace, ref.Name)
			}
			set(e.Name, string(v))
		case vf.FieldRef != nil:
			v, err := w.fieldValue(vf.FieldRef.FieldPath)
			if err != nil {
				return nil, err
			}
			set(e.Name, v)
		case vf.ResourceFieldRef != nil:
			// Limits are not enforced on the ground; report zero (meaning "no limit").
			set(e.Name, "0")
		}
	}
	env := make([]string, 0, len(order))
	for _, k := range order {
		env = append(env, k+"="+vars[k])
	}
	return env, nil
}

func splitHostPort(server string) (string, string) {
	s := strings.TrimPrefix(strings.TrimPrefix(server, "https://"), "http://")
	i := strings.LastIndex(s, ":")
	if i < 0 {
		return s, "443"
	}
	return s[:i], s[i+1:]
}

var refRe = regexp.MustCompile(`\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)`)

// expand resolves $(VAR) references as Kubernetes does: unknown ones stay, $$ escapes.
func expand(s string, vars map[string]string) string {
	return refRe.ReplaceAllStringFunc(s, func(m string) string {
		if m == "$$" {
			return "$"
		}
		name := m[2 : len(m)-1]
		if v, ok := vars[name]; ok {
			return v
		}
		return m
	})
}

func expandAll(in []string, env []string) []string {
	vars := map[string]string{}
	for _, kv := range env {
		if i := strings.Index(kv, "="); i > 0 {
			vars[kv[:i]] = kv[i+1:]
		}
	}
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = expand(s, vars)
	}
	return out
}
