//! The command line: every command, flag, help text and environment variable of `tollgate`, as clap reads
//! them. Nothing here runs anything; `dispatch.rs` maps what was parsed onto the commands.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// `tollgate --version`: the crate version and the commit it was built from.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("TG_GIT_COMMIT"), ")");

#[derive(Parser)]
#[command(name = "tollgate", version = VERSION, about = "Token server for container registries")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Clone)]
pub struct ConfigArg {
    /// Config file (YAML). Default: $TOLLGATE_CONFIG, else the embedded demo config.
    #[arg(short, long, env = "TOLLGATE_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the token server.
    Serve(ConfigArg),
    /// Validate the config, keys, accounts and policy, reporting every problem; exit 1 on any. With
    /// --probe, then contact every directory, IdP, workload issuer and Redis, one line per check.
    CheckConfig {
        #[command(flatten)]
        config: ConfigArg,
        /// text (default), or json: {"ok", "errors", "warnings", "notes", "summary", "probe"}.
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        format: String,
        /// Also contact every provider and the shared store with this config (LDAP connect, bind and base
        /// DNs; OIDC discovery, JWKS and device endpoint; workload issuers' keys; Redis). Writes nothing.
        #[arg(long)]
        probe: bool,
    },
    /// Print the registry's `auth: token:` block and write the root cert bundle and JWKS it reads.
    RegistryConfig {
        #[command(flatten)]
        config: ConfigArg,
        /// The URL clients reach /token at. Default: http://LISTEN/token.
        #[arg(long)]
        realm: Option<String>,
        /// Directory to write rootcertbundle.pem and jwks.json to. Default: DATA_DIR/registry.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// Robot accounts.
    #[command(subcommand)]
    Robot(RobotCommand),
    /// Refresh tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// End a user's or a group's access now, on every replica: drop their cached logins and refuse the
    /// user's refresh tokens issued until now (calls the server's POST /invalidate).
    Invalidate {
        #[command(flatten)]
        config: ConfigArg,
        /// The user (account name) whose access ends.
        #[arg(long, required_unless_present = "group")]
        user: Option<String>,
        /// A group whose members' cached identities are read again (membership changed).
        #[arg(long)]
        group: Option<String>,
        /// Only this provider's account of --user. Default: any.
        #[arg(long, requires = "user")]
        provider: Option<String>,
        /// The server's /invalidate URL. Default: from server.listen of the config.
        #[arg(long)]
        url: Option<String>,
        /// The file holding the bearer secret. Default: invalidation.secret_file of the config.
        #[arg(long)]
        secret_file: Option<PathBuf>,
        /// A CA certificate (PEM) to trust for an https URL.
        #[arg(long)]
        ca_file: Option<PathBuf>,
    },
    /// Rules files.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Workload identities (CI jobs' and pods' JWTs).
    #[command(subcommand)]
    Workload(WorkloadCommand),
    /// Print the argon2id hash of a password for an accounts file: asked twice without echo on a terminal,
    /// else the first line of standard input.
    HashPassword,
    /// Device login (SSO/MFA) to a registry whose token server is tollgate; writes docker's config.json.
    Login {
        /// The registry, host[:port] (or a URL).
        registry: String,
        /// Reach the registry over plain HTTP (test setups).
        #[arg(long)]
        plain_http: bool,
        /// The tollgate provider to log in with. Default: the first offering device login.
        #[arg(long)]
        provider: Option<String>,
        /// docker's config directory. Default: $DOCKER_CONFIG, else ~/.docker.
        #[arg(long)]
        docker_config: Option<PathBuf>,
        /// Also write this containers auth.json (podman, skopeo).
        #[arg(long)]
        authfile: Option<PathBuf>,
        /// Do not open the verification page in a browser (it is opened when there is a display).
        #[arg(long)]
        no_browser: bool,
        /// Trust this CA certificate (PEM) besides the system's, for a registry whose certificate a private CA
        /// signed. SSL_CERT_FILE replaces the system's trust store instead.
        #[arg(long, value_name = "CA.pem")]
        ca_file: Option<PathBuf>,
    },
    /// Kubelet image credential provider: reads the kubelet's CredentialProviderRequest on stdin and answers
    /// with the pod's service-account token as the registry password (Kubernetes 1.33+, tokenAttributes).
    KubeletCredentialProvider {
        /// The username sent with the token (tollgate ignores it for workload tokens).
        #[arg(long, default_value = "kubelet")]
        username: String,
    },
    /// The docker credential helper (get, store, erase or list on stdin/stdout). Usually run through a link
    /// named docker-credential-tollgate, named in docker's config: "credHelpers": {"HOST": "tollgate"}.
    CredentialHelper {
        /// get, store, erase or list.
        action: String,
    },
    /// Print a shell completion script: `tollgate completions bash > /etc/bash_completion.d/tollgate`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `tollgate man > tollgate.1 && man ./tollgate.1`.
    Man,
    /// Write a commented starter config, an accounts file and the example policy with its tests into DIR
    /// (default: here), and print the next steps. Never overwrites.
    Init {
        /// Where to write them.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
}

/// Where the accounts file is.
#[derive(Args)]
pub struct AccountsFileArg {
    /// The accounts file. Default: the file of the first static provider in the config.
    #[arg(long)]
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(Subcommand)]
pub enum RobotCommand {
    /// Create a robot account, print its secret once, and store only its hash.
    Add {
        /// The robot's username.
        name: String,
        #[command(flatten)]
        file: AccountsFileArg,
        /// Comma-separated groups. Required, unless --no-groups.
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// Create the robot without groups (it then gets only what rules give it by name).
        #[arg(long)]
        no_groups: bool,
        /// Expire after this long (e.g. 90d). Default: never.
        #[arg(long)]
        expires_in: Option<String>,
        /// Who owns it and what it is for.
        #[arg(long)]
        description: Option<String>,
    },
    /// List the robots: name, state (active, disabled, expired), groups, expiry, description.
    List {
        #[command(flatten)]
        file: AccountsFileArg,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Refuse a robot's secret and its refresh tokens until it is enabled again.
    Disable {
        name: String,
        #[command(flatten)]
        file: AccountsFileArg,
    },
    /// Accept a disabled robot again.
    Enable {
        name: String,
        #[command(flatten)]
        file: AccountsFileArg,
    },
    /// Give a robot a new secret (printed once); the old one stops at once, or after --grace.
    Rotate {
        name: String,
        #[command(flatten)]
        file: AccountsFileArg,
        /// Keep accepting the old secret this long (e.g. 1h), so pipelines can switch. Default: not at all.
        #[arg(long)]
        grace: Option<String>,
    },
    /// Delete a robot's entry from the accounts file.
    Remove {
        name: String,
        #[command(flatten)]
        file: AccountsFileArg,
    },
}

/// The registry whose realm is tollgate, and how to log in to it, for the access-token commands.
#[derive(Args)]
pub struct RegistryTarget {
    /// Reach the registry over plain HTTP (test setups).
    #[arg(long)]
    pub plain_http: bool,
    /// Trust this CA certificate (PEM) besides the system's.
    #[arg(long, value_name = "CA.pem")]
    pub ca_file: Option<PathBuf>,
    /// docker's config directory, where `tollgate login` stored its login. Default: $DOCKER_CONFIG, else
    /// ~/.docker.
    #[arg(long)]
    pub docker_config: Option<PathBuf>,
    /// Log in as this user with a password (asked for, or --password-stdin) instead of the stored login.
    #[arg(long = "login-user", value_name = "NAME")]
    pub login_user: Option<String>,
    /// Read the password of --login-user from standard input.
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a personal (or, for group admins, a group's) access token; its secret is printed once.
    Create {
        /// The registry, host[:port] (or a URL).
        registry: String,
        /// What the token is for (shown by `token list`).
        #[arg(long)]
        name: String,
        /// A scope entry in the rules' syntax, e.g. repository:payments/**:pull,push (repeat for more).
        #[arg(long, required = true)]
        scope: Vec<String>,
        /// When it expires, e.g. 30d (required; at most access_tokens.max_lifetime).
        #[arg(long)]
        expires: String,
        /// group:NAME for a group's token (members of access_tokens.group_admins).
        #[arg(long)]
        owner: Option<String>,
        #[command(flatten)]
        target: RegistryTarget,
    },
    /// List your access tokens (group admins: --all, --user NAME), or those expiring within 7 days.
    List {
        /// The registry, host[:port] (or a URL).
        registry: String,
        #[arg(long)]
        all: bool,
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        expiring: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: RegistryTarget,
    },
    /// Give an access token a new secret (printed once); the old one keeps working for --grace.
    Rotate {
        /// The registry, host[:port] (or a URL).
        registry: String,
        /// The token's id (from `token list`).
        id: String,
        /// How long the old secret keeps working, e.g. 1h. Default: 0s (it stops at once).
        #[arg(long, default_value = "0s")]
        grace: String,
        /// The new token's lifetime. Default: the old one's.
        #[arg(long)]
        expires: Option<String>,
        #[command(flatten)]
        target: RegistryTarget,
    },
    /// Revoke tokens. With --config (on the server): refresh tokens (--token, --all), an access token
    /// (--id), or everything of a user (--user: refresh and access tokens, for offboarding). With
    /// --registry (anywhere): one of your access tokens (--id), or a user's (--user, group admins).
    Revoke {
        #[command(flatten)]
        config: ConfigArg,
        /// The refresh token to revoke (read from standard input if "-").
        #[arg(long, conflicts_with_all = ["user", "all", "id"])]
        token: Option<String>,
        /// An access token's id.
        #[arg(long, conflicts_with_all = ["user", "all"])]
        id: Option<String>,
        /// Revoke every refresh token (with --config) and access token of this user.
        #[arg(long, conflicts_with = "all")]
        user: Option<String>,
        /// Revoke every refresh token issued until now.
        #[arg(long)]
        all: bool,
        /// Revoke through this registry's tollgate (the token API) instead of the server's store.
        #[arg(long, conflicts_with_all = ["token", "all"])]
        registry: Option<String>,
        #[command(flatten)]
        target: RegistryTarget,
    },
}

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Compile rules files and run the tests written in them.
    Test {
        /// Files or directories. Default: the policy of the config.
        paths: Vec<PathBuf>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Say which rules grant or deny a scope for an identity, and why the others do not apply.
    Explain {
        /// Files or directories. Default: the policy of the config.
        paths: Vec<PathBuf>,
        #[command(flatten)]
        config: ConfigArg,
        /// The scope, e.g. repository:team/app:push,pull.
        #[arg(long)]
        scope: String,
        /// Username; omit for the anonymous identity.
        #[arg(long)]
        user: Option<String>,
        /// Comma-separated groups.
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// Provider name.
        #[arg(long, default_value = "")]
        provider: String,
        /// password, refresh_token, device, workload, access_token or anonymous. Default: password, or anonymous without --user.
        #[arg(long)]
        auth_method: Option<String>,
        /// Client address.
        #[arg(long, default_value = "127.0.0.1")]
        client_ip: std::net::IpAddr,
        /// Service. Default: the first configured service.
        #[arg(long)]
        service: Option<String>,
        /// Claims as a JSON object.
        #[arg(long)]
        claims: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print the built-in example policy.
    Example,
}

#[derive(Subcommand)]
pub enum WorkloadCommand {
    /// Verify a JWT against a `type: workload` provider of the config exactly as the server does, and print
    /// the identity, its claims and what each --scope would grant and why; or why the token is refused
    /// (exit 1).
    Verify {
        #[command(flatten)]
        config: ConfigArg,
        /// The provider entry's name. Default: the config's only workload provider.
        #[arg(long)]
        provider: Option<String>,
        /// A file holding the token, or "-" for standard input.
        #[arg(long, default_value = "-")]
        token: String,
        /// A scope to explain, e.g. repository:ci/acme/app:push,pull (repeatable).
        #[arg(long)]
        scope: Vec<String>,
        /// Service. Default: the first configured service.
        #[arg(long)]
        service: Option<String>,
        /// Client address the rules see.
        #[arg(long, default_value = "127.0.0.1")]
        client_ip: std::net::IpAddr,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}
