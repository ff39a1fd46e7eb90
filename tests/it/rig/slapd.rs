//! A private OpenLDAP `slapd` per test: its own cn=config, database, TLS certificates and ports.
//!
//! Set-up follows RIGS.md: cn=config is written as LDIF and loaded with `slapadd -n0` (modules back_mdb,
//! memberof, refint; schemas core, cosine, nis, inetorgperson; an mdb database with `olcDbNoSync`), then
//! slapd listens on `ldap://` and `ldaps://` loopback ports chosen at run time, and the directory's
//! content is added ONLINE with `ldapadd`, because the memberof overlay fills `memberOf` only for entries
//! added while it runs. TLS uses a private CA and a server certificate with `CA:FALSE` (rustls refuses a CA
//! certificate as a server certificate) and SANs `localhost`, the host name and `127.0.0.1`.
//!
//! The directory (`dc=example,dc=org`):
//! - people: alice, bob (in the groups below), carol (`employeeType: disabled`), dave (disabled the
//!   Active Directory way, `userAccountControl: 514`), and users whose names need escaping: `dev,ops`,
//!   `a+b`, `back\slash`, `#hash`. Every password is `NAME-ldap-pw` ([`Slapd::password`]). Every user
//!   also has AD's `sAMAccountName` and `userAccountControl` (an auxiliary class of the rig's own).
//! - groups: groupOfNames `team-payments` (alice, carol), `team-web` (bob), `Developers` (alice, bob) and
//!   `engineering` (the group Developers: nested); groupOfUniqueNames `auditors` (bob); posixGroup
//!   `release-managers` (memberUid bob). memberOf is maintained for groupOfNames.
//! - a service account `cn=tollgate,ou=services,dc=example,dc=org`; anonymous users can read nothing.
//! - the monitor database, readable by the admin, for the server's own operation counters
//!   ([`Slapd::op_counts`]).
//! - the syncprov overlay (RFC 4533 content synchronisation, with a session log), which tollgate's
//!   directory watcher follows.
//!
//! With [`SlapdOptions::ppolicy`] the ppolicy overlay is loaded with a default policy that enforces locks
//! (`pwdLockout: TRUE`, a lock lapsing after `pwdLockoutDuration: 60` s, `cn=default,ou=policies`), so a test
//! can lock an account the OpenLDAP way ([`Slapd::lock_with_ppolicy`]) and slapd refuses its binds.
//!
//! [`Slapd::stop`] and [`Slapd::start_again`] restart the server on the same ports with the same data.
//! Like [`super::Registry`] it is not `Send`: slapd dies with the thread that spawned it (PDEATHSIG).

use super::{command, require, run, tempdir};
use std::marker::PhantomData;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

pub const BASE: &str = "dc=example,dc=org";
pub const ADMIN_DN: &str = "cn=admin,dc=example,dc=org";
const ADMIN_PW: &str = "admin-ldap-pw";
pub const SERVICE_DN: &str = "cn=tollgate,ou=services,dc=example,dc=org";
pub const SERVICE_PW: &str = "tollgate-service-pw";
pub const PEOPLE: &str = "ou=people,dc=example,dc=org";
pub const GROUPS: &str = "ou=groups,dc=example,dc=org";

/// Users created in every directory, besides alice, bob, carol and dave.
pub const ODD_USERS: &[&str] = &["dev,ops", "a+b", "back\\slash", "#hash"];

/// How to start a [`Slapd`].
#[derive(Debug, Clone, Default)]
pub struct SlapdOptions {
    /// `olcAllows: bind_anon_dn`: a DN with an empty password binds as anonymous instead of failing,
    /// as some production servers do.
    pub allow_bind_anon_dn: bool,
    /// Load the ppolicy overlay with a default policy that enforces locks, so an administrator can lock an
    /// account with `pwdAccountLockedTime` ([`Slapd::lock_with_ppolicy`]).
    pub ppolicy: bool,
}

/// A running slapd, killed on drop.
pub struct Slapd {
    child: Option<Child>,
    pub ldap_port: u16,
    pub ldaps_port: u16,
    /// The database's root DN and password (the rig's own, or those of [`Slapd::start_bare`]).
    admin: (String, String),
    dir: tempfile::TempDir,
    _not_send: PhantomData<std::sync::MutexGuard<'static, ()>>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
}

/// Writes `ca.pem`, `server.pem` and `server.key` into `dir`.
fn write_certificates(dir: &Path) {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, "tollgate test LDAP CA");
    ca.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).expect("CA cert");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let host = hostname();
    if !host.is_empty() && host != "localhost" {
        names.push(host);
    }
    let key = rcgen::KeyPair::generate().expect("server key");
    let mut params = rcgen::CertificateParams::new(names).expect("server params");
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.distinguished_name.push(rcgen::DnType::CommonName, "localhost");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &issuer).expect("server cert");
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).expect("write ca");
    std::fs::write(dir.join("server.pem"), cert.pem()).expect("write cert");
    std::fs::write(dir.join("server.key"), key.serialize_pem()).expect("write key");
}

/// Active Directory's `sAMAccountName` and `userAccountControl` as an auxiliary class, so the AD example
/// config (login attribute, and the disabled bit tested with the bitwise-AND matching rule
/// 1.2.840.113556.1.4.803, which OpenLDAP implements too) runs against slapd. Microsoft's full schema
/// (msuser.ldif) would clash with the memberof overlay's `memberOf`. OIDs from OpenLDAP's experimental arc.
const AD_LIKE_SCHEMA: &str = "dn: cn=adlike,cn=schema,cn=config
objectClass: olcSchemaConfig
cn: adlike
olcAttributeTypes: ( 1.3.6.1.4.1.4203.666.11.901.1 NAME 'sAMAccountName' EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
olcAttributeTypes: ( 1.3.6.1.4.1.4203.666.11.901.2 NAME 'userAccountControl' EQUALITY integerMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
olcObjectClasses: ( 1.3.6.1.4.1.4203.666.11.901.3 NAME 'adLikeUser' AUXILIARY MAY ( sAMAccountName $ userAccountControl ) )
";

/// `userAccountControl` of a normal account (NORMAL_ACCOUNT), and of a disabled one (| ACCOUNTDISABLE).
pub const UAC_NORMAL: u32 = 512;
pub const UAC_DISABLED: u32 = 514;

/// The database a [`Slapd`] serves.
struct Database<'a> {
    suffix: &'a str,
    admin_dn: &'a str,
    admin_pw: &'a str,
    /// The memberof and refint overlays (the rig's directory); a bare database has none.
    overlays: bool,
}

const RIG_DATABASE: Database<'static> =
    Database { suffix: BASE, admin_dn: ADMIN_DN, admin_pw: ADMIN_PW, overlays: true };

fn config_ldif(dir: &Path, opts: &SlapdOptions, db: &Database) -> String {
    let d = dir.display();
    let allows = if opts.allow_bind_anon_dn { "olcAllows: bind_anon_dn\n" } else { "" };
    let Database { suffix, admin_dn, admin_pw, .. } = db;
    let ppolicy_module = if opts.ppolicy { "olcModuleLoad: ppolicy\n" } else { "" };
    let mut config = format!(
        "dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: {d}/slapd.pid
olcTLSCACertificateFile: {d}/ca.pem
olcTLSCertificateFile: {d}/server.pem
olcTLSCertificateKeyFile: {d}/server.key
{allows}
dn: cn=module{{0}},cn=config
objectClass: olcModuleList
cn: module{{0}}
olcModulePath: /usr/lib/ldap
olcModuleLoad: back_mdb
olcModuleLoad: memberof
olcModuleLoad: refint
olcModuleLoad: syncprov
{ppolicy_module}
dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

include: file:///etc/ldap/schema/core.ldif

include: file:///etc/ldap/schema/cosine.ldif

include: file:///etc/ldap/schema/nis.ldif

include: file:///etc/ldap/schema/inetorgperson.ldif

{AD_LIKE_SCHEMA}
dn: olcDatabase={{-1}}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {{-1}}frontend

dn: olcDatabase={{0}}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {{0}}config
olcAccess: {{0}}to * by * none

dn: olcDatabase={{1}}monitor,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {{1}}monitor
olcAccess: {{0}}to * by dn.exact=\"{admin_dn}\" read by * none

dn: olcDatabase={{2}}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {{2}}mdb
olcSuffix: {suffix}
olcRootDN: {admin_dn}
olcRootPW: {admin_pw}
olcDbDirectory: {d}/db
olcDbNoSync: TRUE
olcDbIndex: objectClass eq
olcDbIndex: uid eq
olcDbIndex: member eq
olcDbIndex: uniqueMember eq
olcDbIndex: memberUid eq
olcDbIndex: entryUUID eq
olcDbIndex: entryCSN eq
olcAccess: {{0}}to attrs=userPassword by self write by anonymous auth by * none
olcAccess: {{1}}to * by users read by * none
"
    );
    if db.overlays {
        config.push_str(OVERLAYS);
    }
    if opts.ppolicy {
        let index = if db.overlays { 3 } else { 0 };
        config.push_str(&format!(
            "\ndn: olcOverlay={{{index}}}ppolicy,olcDatabase={{2}}mdb,cn=config\nobjectClass: olcOverlayConfig\n\
             objectClass: olcPPolicyConfig\nolcOverlay: {{{index}}}ppolicy\nolcPPolicyDefault: cn=default,ou=policies,{suffix}\n"
        ));
    }
    config
}

const OVERLAYS: &str = "
dn: olcOverlay={0}memberof,olcDatabase={2}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcMemberOf
olcOverlay: {0}memberof
olcMemberOfRefInt: TRUE
olcMemberOfGroupOC: groupOfNames
olcMemberOfMemberAD: member
olcMemberOfMemberOfAD: memberOf

dn: olcOverlay={1}refint,olcDatabase={2}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcRefintConfig
olcOverlay: {1}refint
olcRefintAttribute: member
olcRefintAttribute: uniqueMember

dn: olcOverlay={2}syncprov,olcDatabase={2}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcSyncProvConfig
olcOverlay: {2}syncprov
olcSpCheckpoint: 100 10
olcSpSessionLog: 1000
";

/// The DN of a user, escaped as RFC 4514 wants (`dev,ops` → `uid=dev\,ops,…`).
pub fn user_dn(uid: &str) -> String {
    format!("uid={},{PEOPLE}", ldap3::dn_escape(uid))
}

pub fn group_dn(cn: &str) -> String {
    format!("cn={cn},{GROUPS}")
}

/// An LDIF value line, base64 when the value is not safe as is.
fn ldif_attr(name: &str, value: &str) -> String {
    use base64::Engine as _;
    let safe = value.bytes().all(|b| (0x20..0x7f).contains(&b))
        && !value.starts_with([' ', ':', '<'])
        && !value.ends_with(' ');
    if safe {
        format!("{name}: {value}\n")
    } else {
        format!("{name}:: {}\n", base64::engine::general_purpose::STANDARD.encode(value))
    }
}

fn person(uid: &str, extra: &str) -> String {
    person_with_uac(uid, extra, UAC_NORMAL)
}

fn person_with_uac(uid: &str, extra: &str, uac: u32) -> String {
    let mut s = ldif_attr("dn", &user_dn(uid));
    s += "objectClass: inetOrgPerson\nobjectClass: adLikeUser\n";
    s += &ldif_attr("uid", uid);
    s += &ldif_attr("sAMAccountName", uid);
    s += &format!("userAccountControl: {uac}\n");
    s += &ldif_attr("cn", uid);
    s += &ldif_attr("sn", uid);
    s += &ldif_attr("userPassword", &Slapd::password(uid));
    s += extra;
    s + "\n"
}

fn content_ldif() -> String {
    let mut s = format!(
        "dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n\
         dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people\n\n\
         dn: {GROUPS}\nobjectClass: organizationalUnit\nou: groups\n\n\
         dn: ou=services,{BASE}\nobjectClass: organizationalUnit\nou: services\n\n\
         dn: {SERVICE_DN}\nobjectClass: applicationProcess\nobjectClass: simpleSecurityObject\ncn: tollgate\n\
         userPassword: {SERVICE_PW}\n\n"
    );
    s += &person("alice", "");
    s += &person("bob", "");
    s += &person("carol", "employeeType: disabled\n");
    s += &person_with_uac("dave", "", UAC_DISABLED);
    for u in ODD_USERS {
        s += &person(u, "");
    }
    let alice = user_dn("alice");
    let bob = user_dn("bob");
    // carol too: groupOfNames needs a member, and tests remove alice.
    s += &format!(
        "dn: {}\nobjectClass: groupOfNames\ncn: team-payments\nmember: {alice}\nmember: {}\n\n",
        group_dn("team-payments"),
        user_dn("carol")
    );
    s += &format!("dn: {}\nobjectClass: groupOfNames\ncn: team-web\nmember: {bob}\n\n", group_dn("team-web"));
    s += &format!(
        "dn: {}\nobjectClass: groupOfNames\ncn: Developers\nmember: {alice}\nmember: {bob}\n\n",
        group_dn("Developers")
    );
    s += &format!(
        "dn: {}\nobjectClass: groupOfNames\ncn: engineering\nmember: {}\n\n",
        group_dn("engineering"),
        group_dn("Developers")
    );
    s += &format!(
        "dn: {}\nobjectClass: groupOfUniqueNames\ncn: auditors\nuniqueMember: {bob}\n\n",
        group_dn("auditors")
    );
    s += &format!(
        "dn: {}\nobjectClass: posixGroup\ncn: release-managers\ngidNumber: 5001\nmemberUid: bob\n\n",
        group_dn("release-managers")
    );
    s
}

impl Slapd {
    /// Starts slapd with the standard directory, waiting until it answers. Panics with slapd's output if
    /// it does not start.
    pub fn start(opts: SlapdOptions) -> Slapd {
        let slapd = Slapd::start_database(&opts, &RIG_DATABASE);
        slapd.ldapadd(&content_ldif());
        if opts.ppolicy {
            slapd.ldapadd(&format!(
                "dn: ou=policies,{BASE}\nobjectClass: organizationalUnit\nou: policies\n\n\
                 dn: cn=default,ou=policies,{BASE}\nobjectClass: device\nobjectClass: pwdPolicy\ncn: default\n\
                 pwdAttribute: userPassword\npwdLockout: TRUE\npwdMaxFailure: 100\npwdLockoutDuration: 60\n"
            ));
        }
        slapd
    }

    /// Starts slapd with an EMPTY database for `suffix` (no entry, not even the root) whose root DN is
    /// `admin_dn`, and no overlays: what an OpenLDAP container image sets up before it adds the LDIF
    /// files it is given ([`Slapd::ldapadd_file`]).
    pub fn start_bare(suffix: &str, admin_dn: &str, admin_pw: &str) -> Slapd {
        let db = Database { suffix, admin_dn, admin_pw, overlays: false };
        Slapd::start_database(&SlapdOptions::default(), &db)
    }

    fn start_database(opts: &SlapdOptions, db: &Database) -> Slapd {
        require("/usr/sbin/slapd", "slapd");
        require("ldapadd", "ldap-utils");
        let dir = tempdir("slapd");
        write_certificates(dir.path());
        std::fs::create_dir_all(dir.path().join("slapd.d")).expect("mkdir slapd.d");
        std::fs::create_dir_all(dir.path().join("db")).expect("mkdir db");
        let ldif = dir.path().join("config.ldif");
        std::fs::write(&ldif, config_ldif(dir.path(), opts, db)).expect("write config.ldif");
        let mut slapadd = command("/usr/sbin/slapadd");
        slapadd.arg("-n0").arg("-F").arg(dir.path().join("slapd.d")).arg("-l").arg(&ldif);
        run(slapadd, None, &[], Duration::from_secs(30)).assert_ok();
        let admin = (db.admin_dn.to_string(), db.admin_pw.to_string());
        let mut slapd = Slapd { child: None, ldap_port: 0, ldaps_port: 0, admin, dir, _not_send: PhantomData };
        // Ports are probed free, then handed to slapd; a port taken in between is retried.
        for attempt in 1..=10 {
            slapd.ldap_port = free_port();
            slapd.ldaps_port = free_port();
            match slapd.spawn() {
                Ok(()) => break,
                Err(e) if attempt < 10 => eprintln!("slapd did not start on fresh ports, retrying: {e}"),
                Err(e) => panic!("slapd did not start: {e}"),
            }
        }
        slapd
    }

    /// The password of every test user.
    pub fn password(uid: &str) -> String {
        format!("{uid}-ldap-pw")
    }

    pub fn ldap_url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.ldap_port)
    }

    pub fn ldaps_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.ldaps_port)
    }

    /// The root DN and its password, for a test that writes through its own LDAP connection.
    pub fn admin_credentials(&self) -> (String, String) {
        self.admin.clone()
    }

    /// slapd's process id while it runs (for CPU figures).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The private CA that signed the server certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A file holding the service account's password (with a trailing newline, as `echo` writes it).
    pub fn service_password_file(&self) -> PathBuf {
        let p = self.dir.path().join("service-password");
        std::fs::write(&p, format!("{SERVICE_PW}\n")).expect("write service password");
        p
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log = std::fs::File::create(self.dir.path().join("slapd.log")).expect("slapd log");
        let mut cmd = command("/usr/sbin/slapd");
        cmd.arg("-F")
            .arg(self.dir.path().join("slapd.d"))
            .arg("-h")
            .arg(format!("ldap://127.0.0.1:{}/ ldaps://127.0.0.1:{}/", self.ldap_port, self.ldaps_port))
            // -d keeps slapd in the foreground (a child we can kill); level 0 logs only problems.
            .arg("-d")
            .arg("0")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        let child = cmd.spawn().map_err(|e| format!("cannot start slapd: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                return Err(format!("slapd exited with {status}:\n{}", self.log()));
            }
            let mut who = command("ldapwhoami");
            who.args(["-x", "-H", &self.ldap_url(), "-D", &self.admin.0, "-w", &self.admin.1]);
            if run(who, None, &[&self.admin.1], Duration::from_secs(5)).ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("slapd did not answer within 20 s:\n{}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("slapd.log")).unwrap_or_default()
    }

    /// Stop slapd (SIGKILL: the server just vanishes, as in a crash or a network cut).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start slapd again on the same ports with the same data.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "slapd is running");
        // The ports were ours a moment ago; slapd binds with SO_REUSEADDR, but retry briefly anyway.
        let mut last = String::new();
        for _ in 0..20 {
            match self.spawn() {
                Ok(()) => return,
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("slapd did not restart: {last}");
    }

    fn admin_tool(&self, tool: &str, ldif: &str) {
        let mut cmd = command(tool);
        cmd.args(["-x", "-H", &self.ldap_url(), "-D", &self.admin.0, "-w", &self.admin.1]);
        run(cmd, Some(ldif.as_bytes()), &[&self.admin.1], Duration::from_secs(30)).assert_ok();
    }

    /// `ldapadd -f FILE` bound as the root DN, as an OpenLDAP image loads its seed files.
    pub fn ldapadd_file(&self, file: &Path) {
        let mut cmd = command("ldapadd");
        cmd.args(["-x", "-H", &self.ldap_url(), "-D", &self.admin.0, "-w", &self.admin.1, "-f"]).arg(file);
        run(cmd, None, &[&self.admin.1], Duration::from_secs(30)).assert_ok();
    }

    /// Add entries, online (so the overlays see them).
    pub fn ldapadd(&self, ldif: &str) {
        self.admin_tool("ldapadd", ldif);
    }

    pub fn ldapmodify(&self, ldif: &str) {
        self.admin_tool("ldapmodify", ldif);
    }

    pub fn add_member(&self, group: &str, uid: &str) {
        self.ldapmodify(&format!(
            "{}changetype: modify\nadd: member\n{}",
            ldif_attr("dn", &group_dn(group)),
            ldif_attr("member", &user_dn(uid))
        ));
    }

    pub fn remove_member(&self, group: &str, uid: &str) {
        self.ldapmodify(&format!(
            "{}changetype: modify\ndelete: member\n{}",
            ldif_attr("dn", &group_dn(group)),
            ldif_attr("member", &user_dn(uid))
        ));
    }

    /// Lock `uid` the way the ppolicy overlay does: `pwdAccountLockedTime` `at` (a generalized time; a lock
    /// lapses 60 s after it, except `000001010000Z`, which stays until an administrator removes it). The
    /// attribute is operational, so the modification needs the relax control. Needs [`SlapdOptions::ppolicy`].
    pub fn lock_with_ppolicy(&self, uid: &str, at: &str) {
        let mut cmd = command("ldapmodify");
        let (dn, pw) = &self.admin;
        cmd.args(["-x", "-e", "relax", "-H", &self.ldap_url(), "-D", dn, "-w", pw]);
        let ldif = format!(
            "{}changetype: modify\nreplace: pwdAccountLockedTime\npwdAccountLockedTime: {at}\n",
            ldif_attr("dn", &user_dn(uid))
        );
        run(cmd, Some(ldif.as_bytes()), &[pw], Duration::from_secs(30)).assert_ok();
    }

    pub fn delete_user(&self, uid: &str) {
        self.ldapmodify(&format!("{}changetype: delete\n", ldif_attr("dn", &user_dn(uid))));
    }

    /// Completed (binds, searches) as counted by slapd's monitor backend. Reading them is itself a bind
    /// and a search, which the NEXT reading includes: the difference of two readings is the operations in
    /// between plus exactly one bind and one search ([`Slapd::ops_between`] subtracts them).
    pub fn op_counts(&self) -> (u64, u64) {
        let mut cmd = command("ldapsearch");
        cmd.args(["-x", "-LLL", "-H", &self.ldap_url(), "-D", ADMIN_DN, "-w", ADMIN_PW]).args([
            "-b",
            "cn=Operations,cn=Monitor",
            "-s",
            "one",
            "(objectClass=*)",
            "monitorOpCompleted",
        ]);
        let out = run(cmd, None, &[ADMIN_PW], Duration::from_secs(30));
        out.assert_ok();
        let (mut binds, mut searches, mut current) = (0, 0, String::new());
        for line in out.stdout.lines() {
            if let Some(dn) = line.strip_prefix("dn: ") {
                current = dn.to_string();
            } else if let Some(n) = line.strip_prefix("monitorOpCompleted: ") {
                let n: u64 = n.trim().parse().expect("a number");
                if current.starts_with("cn=Bind,") {
                    binds = n;
                } else if current.starts_with("cn=Search,") {
                    searches = n;
                }
            }
        }
        (binds, searches)
    }

    /// (binds, searches) sent by others between two [`Slapd::op_counts`] readings.
    pub fn ops_between(before: (u64, u64), after: (u64, u64)) -> (u64, u64) {
        (after.0 - before.0 - 1, after.1 - before.1 - 1)
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP server that accepts connections and never answers: the slow directory of the timeout tests.
/// Connections are held open until it is dropped.
pub struct Silent {
    pub addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Silent {
    pub fn start() -> Silent {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                if let Ok((s, _)) = listener.accept() {
                    held.push(s);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Silent { addr, stop, thread: Some(thread) }
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
