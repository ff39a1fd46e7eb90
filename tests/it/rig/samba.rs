//! A private Samba 4 Active Directory domain controller per test: provisioned into a temp dir, listening on
//! a loopback address of its own, with a directory built by `samba-tool`.
//!
//! Facts this is built on (Samba 4.17, Debian 12; see RIGS.md):
//! - `samba-tool domain provision --dns-backend=NONE` with `server services = ldap` takes ~3-6 s; it fails
//!   without `samba-vfs-modules` (`acl_xattr.so`), which Debian only recommends.
//! - Samba's LDAP ports are fixed (389, 636, 3268, 3269): each DC gets its own 127.A.B.C address
//!   (`interfaces = IP/8` + `bind interfaces only`; without `/8` it listens nowhere), chosen at random from
//!   127.100.0.0-127.199.255.255 and probed free on all four ports first.
//! - Samba refuses simple binds without TLS (rc 8) and its generated certificate has no subjectAltName,
//!   which rustls refuses: the rig makes a CA and a server certificate whose SAN is the DC's IP (and its DNS
//!   name) and points `tls certfile/keyfile/cafile` at them. The key file must be mode 0600.
//! - `pid directory`, `ncalrpc dir` and `log file` default to host-wide paths (/run/samba, /var/log/samba):
//!   every DC gets its own under its temp dir, so two DCs (or the host's) never share a pid file.
//! - `samba -F -M single` runs the whole DC as ONE process (the default prefork model forks a master and
//!   workers). It is started in a process group of its own, killed as a group by its id, and it also gets
//!   the rig's PDEATHSIG, so nothing outlives the test.
//! - `samba-tool` costs ~0.3 s of Python start-up per call, so the directory is built by running
//!   samba-tool's own command classes in one Python process ([`SambaDc::samba_tool_batch`]); single calls
//!   go through the real `samba-tool` executable. Both write `private/sam.ldb` directly, which the running
//!   DC sees at once.
//! - `memberOf` omits the primary group (`Domain Users`); the name `guests` is taken by `BUILTIN\Guests`;
//!   an account is locked out by binding with a wrong password (here through a password settings object
//!   with a threshold of 2, applied to one user, so no other test user can be locked by accident).
//! - Refused binds carry AD's sub-code: `…AcceptSecurityContext error, data 775, v1db1`. Samba answers
//!   52e (not 525) for an unknown user.
//!
//! The directory (`DC=ad,DC=example,DC=org`, NetBIOS domain `AD`):
//! - `OU=Staff`: alice (team-payments), carol (payments-leads, itself a member of team-payments: nested),
//!   bob (admins), `Smith, J (*) \ x` (sAMAccountName smithj, team-payments: a DN that needs escaping),
//!   mallory (the contractors' `CN=admins` and `BUILTIN\Guests`), frank (both `CN=admins` groups), and the
//!   accounts tests put into a state: expired, locked, mustchange, dave, hours, roamer (all in
//!   team-payments, usable until a test changes them). Passwords: [`SambaDc::password`].
//! - `OU=Groups`: team-payments, payments-leads, admins. `OU=Contractors`: `CN=admins` with sAMAccountName
//!   `contractor-admins` (the same CN in another OU).
//! - `CN=svc-tollgate,CN=Users`: the service account tollgate searches with.

use super::{command, require, run, tempdir, Output};
use std::marker::PhantomData;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

pub const REALM: &str = "AD.EXAMPLE.ORG";
pub const BASE: &str = "DC=ad,DC=example,DC=org";
pub const STAFF: &str = "OU=Staff,DC=ad,DC=example,DC=org";
pub const GROUPS: &str = "OU=Groups,DC=ad,DC=example,DC=org";
pub const CONTRACTORS: &str = "OU=Contractors,DC=ad,DC=example,DC=org";
pub const SERVICE_DN: &str = "CN=svc-tollgate,CN=Users,DC=ad,DC=example,DC=org";
const SERVICE_PW: &str = "Svc-tollgate-AD-pw-1";
const ADMIN_PW: &str = "Admin-AD-pw-1";

/// The CN of smithj: characters RFC 4514 (`,` `\`) and RFC 4515 (`(` `*` `)` `\`) escape.
pub const SMITH_CN: &str = r"Smith, J (*) \ x";
/// [`SMITH_CN`] escaped as Samba writes it in DNs.
pub const SMITH_ESCAPED: &str = r"Smith\, J (*) \\ x";

/// Accounts a test may put into a state (expired, locked, ...); all start usable and in team-payments.
pub const STATE_USERS: &[&str] = &["expired", "locked", "mustchange", "dave", "hours", "roamer"];

const PACKAGES: &str = "samba samba-ad-provision samba-dsdb-modules samba-vfs-modules winbind python3-samba";

/// A running Samba AD DC, killed (with its process group) on drop. Not `Send`: the DC dies with the
/// thread that spawned it (PDEATHSIG), like [`super::Slapd`].
pub struct SambaDc {
    child: Option<Child>,
    pub ip: Ipv4Addr,
    dir: tempfile::TempDir,
    /// How long provisioning took (for the report).
    pub provision_time: Duration,
    _not_send: PhantomData<std::sync::MutexGuard<'static, ()>>,
}

/// A random 127.100-199.x.y address whose four LDAP ports are free right now.
fn free_address() -> Ipv4Addr {
    use std::hash::BuildHasher as _;
    // RandomState is seeded randomly per instance: random enough to keep parallel test runs apart.
    let random = std::collections::hash_map::RandomState::new();
    for attempt in 0u64..100 {
        let r = random.hash_one((attempt, std::process::id())).to_le_bytes();
        let ip = Ipv4Addr::new(127, 100 + r[0] % 100, r[1], 1 + r[2] % 254);
        let listeners: Vec<_> = [389, 636, 3268, 3269].iter().map(|p| TcpListener::bind((ip, *p))).collect();
        if listeners.iter().all(Result::is_ok) {
            return ip;
        }
        if listeners.iter().any(|l| l.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied)) {
            panic!("the Samba AD DC rig binds ports 389 and 636, which needs root (as scripts/test.sh runs)");
        }
    }
    panic!("no free 127.x.y.z address with ports 389, 636, 3268 and 3269 free");
}

/// Writes `tls/ca.pem`, `tls/server.pem` and `tls/server.key` (mode 0600, or Samba refuses it): a server
/// certificate for `ip` (IP SAN) and the DC's DNS name, signed by a private CA.
fn write_certificates(dir: &Path, ip: Ipv4Addr) {
    use std::os::unix::fs::PermissionsExt as _;
    let tls = dir.join("tls");
    std::fs::create_dir_all(&tls).expect("mkdir tls");
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, "tollgate test AD CA");
    ca.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).expect("CA cert");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().expect("server key");
    let mut params =
        rcgen::CertificateParams::new(vec![ip.to_string(), "dc1.ad.example.org".to_string()]).expect("server params");
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.distinguished_name.push(rcgen::DnType::CommonName, "dc1.ad.example.org");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &issuer).expect("server cert");
    std::fs::write(tls.join("ca.pem"), ca_cert.pem()).expect("write ca");
    std::fs::write(tls.join("server.pem"), cert.pem()).expect("write cert");
    let key_path = tls.join("server.key");
    std::fs::write(&key_path, key.serialize_pem()).expect("write key");
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).expect("chmod key");
}

/// The `samba-tool` commands that build the standard directory (run as one batch).
fn content_commands() -> Vec<Vec<String>> {
    let v = |args: &[&str]| args.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut cmds = vec![
        // Short test passwords, no history or minimum age (tests change passwords), no domain-wide lockout.
        v(&[
            "domain",
            "passwordsettings",
            "set",
            "--complexity=off",
            "--min-pwd-length=1",
            "--history-length=0",
            "--min-pwd-age=0",
            "--max-pwd-age=0",
            "--account-lockout-threshold=0",
        ]),
        v(&["ou", "create", STAFF]),
        v(&["ou", "create", GROUPS]),
        v(&["ou", "create", CONTRACTORS]),
        v(&["user", "create", "svc-tollgate", SERVICE_PW]),
    ];
    for u in ["alice", "bob", "carol", "mallory", "frank"].iter().chain(STATE_USERS) {
        cmds.push(v(&["user", "create", u, &SambaDc::password(u), "--userou=OU=Staff", "--use-username-as-cn"]));
    }
    // CN "Smith, J (*) \ x": samba-tool puts a CN into a DN unescaped (`invalid dn`), so the rename is
    // given the escaped form.
    cmds.push(v(&[
        "user",
        "create",
        "smithj",
        &SambaDc::password("smithj"),
        "--userou=OU=Staff",
        "--use-username-as-cn",
    ]));
    cmds.push(v(&["user", "rename", "smithj", &format!("--force-new-cn={SMITH_ESCAPED}")]));
    for g in ["team-payments", "payments-leads", "admins"] {
        cmds.push(v(&["group", "add", g, "--groupou=OU=Groups"]));
    }
    // The same CN in another OU: created as contractor-admins, then its CN renamed to "admins".
    cmds.push(v(&["group", "add", "contractor-admins", "--groupou=OU=Contractors"]));
    cmds.push(v(&["group", "rename", "contractor-admins", "--force-new-cn=admins"]));
    let mut payments = vec!["alice", "smithj", "payments-leads"];
    payments.extend(STATE_USERS);
    cmds.push(v(&["group", "addmembers", "team-payments", &payments.join(",")]));
    cmds.push(v(&["group", "addmembers", "payments-leads", "carol"]));
    cmds.push(v(&["group", "addmembers", "admins", "bob,frank"]));
    cmds.push(v(&["group", "addmembers", "contractor-admins", "mallory,frank"]));
    cmds.push(v(&["group", "addmembers", "Guests", "mallory"]));
    // Locks an account after two wrong passwords, for the one user the lockout test uses.
    cmds.push(v(&[
        "domain",
        "passwordsettings",
        "pso",
        "create",
        "lock-fast",
        "1",
        "--account-lockout-threshold=2",
        "--account-lockout-duration=60",
        "--reset-account-lockout-after=60",
    ]));
    cmds.push(v(&["domain", "passwordsettings", "pso", "apply", "lock-fast", "locked"]));
    cmds
}

/// Runs samba-tool's command classes for each argument list in ONE Python process (what `/usr/bin/samba-tool`
/// does for one). Prints `FAILED <n>` and stops at the first command that fails.
const BATCH_PY: &str = r#"
import json, sys
from samba.netcmd.main import cmd_sambatool
for n, argv in enumerate(json.load(sys.stdin)):
    cmd = cmd_sambatool()
    try:
        rc = cmd._run("samba-tool", *argv)
    except SystemExit as e:
        rc = e.code
    except Exception as e:
        cmd.show_command_error(e)
        rc = 1
    if rc not in (0, None):
        print("FAILED %d: samba-tool %s" % (n, " ".join(argv)), flush=True)
        sys.exit(1)
"#;

impl SambaDc {
    /// Provisions a DC, builds the directory, starts it and waits until LDAPS answers. Panics naming the
    /// Debian packages when Samba is not installed.
    pub fn start() -> SambaDc {
        require("/usr/sbin/samba", PACKAGES);
        require("/usr/bin/samba-tool", PACKAGES);
        require("ldapsearch", "ldap-utils");
        require("/usr/bin/python3", "python3-samba");
        let dir = tempdir("samba");
        let ip = free_address();
        write_certificates(dir.path(), ip);
        for d in ["run", "log"] {
            std::fs::create_dir_all(dir.path().join(d)).expect("mkdir");
        }
        let d = dir.path().display().to_string();
        let started = Instant::now();
        let mut provision = command("/usr/bin/samba-tool");
        provision.args(["domain", "provision", "--realm", REALM, "--domain", "AD", "--server-role=dc"]);
        provision.args(["--dns-backend=NONE", "--host-name=dc1", "--adminpass", ADMIN_PW]);
        provision.arg(format!("--targetdir={d}/dc"));
        for option in [
            format!("interfaces = {ip}/8"),
            "bind interfaces only = yes".into(),
            "server services = ldap".into(),
            format!("pid directory = {d}/run"),
            format!("ncalrpc dir = {d}/run/ncalrpc"),
            format!("log file = {d}/log/log.%m"),
            "tls enabled = yes".into(),
            format!("tls certfile = {d}/tls/server.pem"),
            format!("tls keyfile = {d}/tls/server.key"),
            format!("tls cafile = {d}/tls/ca.pem"),
        ] {
            provision.arg(format!("--option={option}"));
        }
        let out = run(provision, None, &[ADMIN_PW], Duration::from_secs(180));
        assert!(out.ok, "samba-tool domain provision failed (is samba-vfs-modules installed?):\n{out}");
        let provision_time = started.elapsed();
        let mut dc = SambaDc { child: None, ip, dir, provision_time, _not_send: PhantomData };
        dc.samba_tool_batch(&content_commands());
        dc.spawn().unwrap_or_else(|e| panic!("samba did not start: {e}"));
        dc
    }

    /// Administrator's bind name (UPN) and password, for a test that writes through its own LDAP connection.
    pub fn admin_credentials(&self) -> (String, String) {
        (format!("Administrator@{REALM}"), ADMIN_PW.to_string())
    }

    /// The DC's process id while it runs (for CPU figures).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The password of every test user.
    pub fn password(user: &str) -> String {
        format!("{user}-AD-pw-1")
    }

    pub fn ldaps_url(&self) -> String {
        format!("ldaps://{}", self.ip)
    }

    /// Plain LDAP, for StartTLS (Samba refuses simple binds before it).
    pub fn ldap_url(&self) -> String {
        format!("ldap://{}", self.ip)
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("tls/ca.pem")
    }

    /// A file holding the service account's password (with a trailing newline, as `echo` writes it).
    pub fn service_password_file(&self) -> PathBuf {
        let p = self.dir.path().join("service-password");
        std::fs::write(&p, format!("{SERVICE_PW}\n")).expect("write service password");
        p
    }

    /// The DN of a user created by the rig in `OU=Staff`.
    pub fn user_dn(user: &str) -> String {
        let cn = if user == "smithj" { SMITH_ESCAPED } else { user };
        format!("CN={cn},{STAFF}")
    }

    fn smb_conf(&self) -> String {
        format!("{}/dc/etc/smb.conf", self.dir.path().display())
    }

    fn sam_ldb(&self) -> String {
        format!("{}/dc/private/sam.ldb", self.dir.path().display())
    }

    /// `samba-tool ARGS -s smb.conf -H sam.ldb` through the real executable; panics with its output if it fails.
    pub fn samba_tool(&self, args: &[&str]) -> Output {
        let mut cmd = command("/usr/bin/samba-tool");
        cmd.args(args).args(["-s", &self.smb_conf(), "-H", &self.sam_ldb()]);
        let out = run(cmd, None, &[], Duration::from_secs(60));
        out.assert_ok();
        out
    }

    /// Several samba-tool commands in one Python process (see [`BATCH_PY`]); `-s` and `-H` are added to each.
    pub fn samba_tool_batch(&self, commands: &[Vec<String>]) {
        let with_db: Vec<Vec<String>> = commands
            .iter()
            .map(|c| {
                let mut c = c.clone();
                c.extend(["-s".to_string(), self.smb_conf(), "-H".to_string(), self.sam_ldb()]);
                c
            })
            .collect();
        let mut cmd = command("/usr/bin/python3");
        cmd.args(["-c", BATCH_PY]);
        let input = serde_json::to_vec(&with_db).expect("json");
        let out = run(cmd, Some(&input), &[], Duration::from_secs(300));
        assert!(out.ok, "samba-tool batch failed:\n{out}");
    }

    fn spawn(&mut self) -> Result<(), String> {
        use std::os::unix::process::CommandExt as _;
        let log = std::fs::File::create(self.dir.path().join("log/samba.out")).expect("samba log");
        let mut cmd = command("/usr/sbin/samba");
        cmd.args(["-s", &self.smb_conf(), "-F", "-M", "single", "--debug-stdout", "-d", "1"])
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        let child = cmd.spawn().map_err(|e| format!("cannot start samba: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                return Err(format!("samba exited with {status}:\n{}", self.log()));
            }
            if self.admin_search("", "base", "(objectClass=*)", &["dnsHostName"]).ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(format!("samba did not answer LDAPS within 30 s:\n{}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Give `sid` List Contents and Read Property on `CN=Deleted Objects` (what `dsacls … /G DOMAIN\\svc:LCRP`
    /// does on Windows), so that account can read tombstones. `samba-tool dsacl` cannot: it reads the
    /// container without the show-deleted control.
    pub fn allow_reading_deleted_objects(&self, sid: &str) {
        let script = format!(
            r#"
import samba.param, samba.auth, ldb
from samba.samdb import SamDB
from samba.ndr import ndr_unpack, ndr_pack
from samba.dcerpc import security
lp = samba.param.LoadParm(); lp.load("{conf}")
db = SamDB(url="{sam}", lp=lp, session_info=samba.auth.system_session())
dn = "CN=Deleted Objects," + db.domain_dn()
res = db.search(base=dn, scope=ldb.SCOPE_BASE, attrs=["nTSecurityDescriptor"], controls=["show_deleted:1", "sd_flags:1:4"])
sd = ndr_unpack(security.descriptor, res[0]["nTSecurityDescriptor"][0])
sid = security.dom_sid("{sid}")
sd.dacl_add(security.descriptor.from_sddl("D:(A;;LCRP;;;{sid})", sid).dacl.aces[0])
m = ldb.Message(); m.dn = ldb.Dn(db, dn)
m["nTSecurityDescriptor"] = ldb.MessageElement(ndr_pack(sd), ldb.FLAG_MOD_REPLACE, "nTSecurityDescriptor")
db.modify(m, controls=["show_deleted:1", "sd_flags:1:4"])
"#,
            conf = self.smb_conf(),
            sam = self.sam_ldb(),
        );
        let mut cmd = command("/usr/bin/python3");
        cmd.arg("-c").arg(script);
        run(cmd, None, &[], Duration::from_secs(60)).assert_ok();
    }

    /// Samba's own output (start-up, errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log/samba.out")).unwrap_or_default()
    }

    /// An ldap-utils command bound as `who` over LDAPS with the rig's CA, ignoring the host's ldap.conf and
    /// ~/.ldaprc (LDAPNOINIT would also drop the LDAPTLS_* variables).
    fn ldap_tool(&self, tool: &str, who: &str, password: &str) -> std::process::Command {
        let mut cmd = command(tool);
        cmd.env("LDAPCONF", "/dev/null")
            .env("LDAPRC", "tollgate-rig-no-ldaprc")
            .env("LDAPTLS_CACERT", self.ca_file())
            .env("LDAPTLS_REQCERT", "demand")
            .args(["-x", "-H", &self.ldaps_url(), "-D", who, "-w", password]);
        cmd
    }

    /// `ldapsearch -LLL` as Administrator (never panics: the readiness check uses it too).
    pub fn admin_search(&self, base: &str, scope: &str, filter: &str, attrs: &[&str]) -> Output {
        let mut cmd = self.ldap_tool("ldapsearch", &format!("Administrator@{REALM}"), ADMIN_PW);
        cmd.args(["-LLL", "-o", "ldif-wrap=no", "-b", base, "-s", scope, filter]).args(attrs);
        run(cmd, None, &[ADMIN_PW], Duration::from_secs(30))
    }

    /// `ldapmodify` as Administrator with `ldif`, for what samba-tool has no command for.
    pub fn admin_modify(&self, ldif: &str) {
        let cmd = self.ldap_tool("ldapmodify", &format!("Administrator@{REALM}"), ADMIN_PW);
        run(cmd, Some(ldif.as_bytes()), &[ADMIN_PW], Duration::from_secs(30)).assert_ok();
    }

    /// A simple bind as `user@REALM` with `password` (and a base search of the root DSE): the directory's own
    /// answer, e.g. `… data 775, v1db1` for a locked-out account.
    pub fn bind_as(&self, user: &str, password: &str) -> Output {
        let mut cmd = self.ldap_tool("ldapsearch", &format!("{user}@{REALM}"), password);
        cmd.args(["-LLL", "-b", "", "-s", "base", "(objectClass=*)", "dnsHostName"]);
        run(cmd, None, &[], Duration::from_secs(30))
    }

    /// One attribute of a user entry in `OU=Staff`, as Administrator.
    pub fn user_attribute(&self, user: &str, attribute: &str) -> Option<String> {
        let out = self.admin_search(&Self::user_dn(user), "base", "(objectClass=*)", &[attribute]);
        out.assert_ok();
        let prefix = format!("{attribute}: ");
        out.stdout.lines().find_map(|l| l.strip_prefix(&prefix)).map(str::to_string)
    }

    /// `samba-tool user disable`.
    pub fn disable(&self, user: &str) {
        self.samba_tool(&["user", "disable", user]);
    }

    /// `samba-tool user setexpiry --days=0`: the account expires now.
    pub fn expire(&self, user: &str) {
        self.samba_tool(&["user", "setexpiry", user, "--days=0"]);
    }

    /// Locks the account out the way it happens in production: wrong passwords until the directory says 775
    /// (the user's password settings object locks after two).
    pub fn lock_out(&self, user: &str) {
        for _ in 0..5 {
            let out = self.bind_as(user, "a-wrong-password");
            if out.combined().contains("data 775") {
                return;
            }
        }
        panic!("{user} is not locked out after 5 wrong passwords: {:?}", self.user_attribute(user, "lockoutTime"));
    }

    /// `pwdLastSet: 0`: the user must change the password at the next logon.
    pub fn must_change_password(&self, user: &str) {
        self.admin_modify(&format!(
            "dn: {}\nchangetype: modify\nreplace: pwdLastSet\npwdLastSet: 0\n",
            Self::user_dn(user)
        ));
    }

    /// `logonHours` all zero: no hour of the week is a permitted logon time (AD answers 530).
    pub fn no_logon_hours(&self, user: &str) {
        use base64::Engine as _;
        self.admin_modify(&format!(
            "dn: {}\nchangetype: modify\nreplace: logonHours\nlogonHours:: {}\n",
            Self::user_dn(user),
            base64::engine::general_purpose::STANDARD.encode([0u8; 21])
        ));
    }

    /// `userWorkstations`: logons only from a computer that never binds (AD answers 531).
    pub fn only_from_workstation(&self, user: &str) {
        self.admin_modify(&format!(
            "dn: {}\nchangetype: modify\nreplace: userWorkstations\nuserWorkstations: NOWHERE\n",
            Self::user_dn(user)
        ));
    }

    /// Kill the DC (SIGKILL to its process group: it just vanishes, as in a crash or a network cut).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on the process group that `process_group(0)` made for our own child.
            unsafe {
                libc::kill(-(c.id() as libc::pid_t), libc::SIGKILL);
            }
            let _ = c.wait();
        }
    }

    /// Start the DC again on the same address with the same data.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "samba is running");
        let mut last = String::new();
        for _ in 0..20 {
            match self.spawn() {
                Ok(()) => return,
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("samba did not restart: {last}");
    }
}

impl Drop for SambaDc {
    fn drop(&mut self) {
        self.stop();
    }
}
