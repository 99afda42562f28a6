//! What the kernel says of a container the ground's node runs with runc: its process's users,
//! groups, capabilities, no_new_privs, seccomp and root mount, read from /proc.
/// What the kernel says of a running container's main process, found through the ground's runc
/// state (the node names the runc container in the container status: `runc://ID`).
#[derive(Debug)]
pub struct ContainerProcess {
    /// Real, effective, saved and filesystem UIDs (`Uid:` of /proc/PID/status).
    pub uids: Vec<u32>,
    pub gids: Vec<u32>,
    pub groups: Vec<u32>,
    pub cap_eff: String,
    pub no_new_privs: bool,
    /// 2: a seccomp filter is in place.
    pub seccomp: u32,
    /// The options of the container's root mount (`ro` for a read-only root filesystem).
    pub root_options: String,
    /// The image as the container status names it.
    pub image_id: String,
}

pub fn container_process(pod: &k8s_openapi::api::core::v1::Pod) -> ContainerProcess {
    let status = &pod
        .status
        .as_ref()
        .expect("pod status")
        .container_statuses
        .as_ref()
        .expect("container statuses")[0];
    let id = status
        .container_id
        .as_deref()
        .and_then(|id| id.strip_prefix("runc://"))
        .unwrap_or_else(|| panic!("not a runc container: {:?}", status.container_id));
    let state = std::env::var("GROUND_STATE").expect("GROUND_STATE from the ground's env");
    let out = std::process::Command::new("runc")
        .args(["--root", &format!("{state}/runc"), "state", id])
        .output()
        .expect("runc on PATH (the ground's env)");
    assert!(
        out.status.success(),
        "runc state {id}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["pid"]
        .as_u64()
        .expect("a pid");
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let numbers = |name: &str| -> Vec<u32> {
        field(name)
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect()
    };
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    // Fields: id parent major:minor root mount-point options ...
    let root_options = mountinfo
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .rfind(|f| f.len() > 5 && f[4] == "/")
        .map(|f| f[5].to_string())
        .expect("the container's root mount");
    ContainerProcess {
        uids: numbers("Uid"),
        gids: numbers("Gid"),
        groups: numbers("Groups"),
        cap_eff: field("CapEff"),
        no_new_privs: field("NoNewPrivs") == "1",
        seccomp: field("Seccomp").parse().unwrap_or(0),
        root_options,
        image_id: status.image_id.clone(),
    }
}
