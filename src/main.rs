//! The `tollgate` command: parse the command line, load the config, run. Errors are printed once, here.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use tollgate::cli;

/// `tollgate --version`: the crate version and the commit it was built from.
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("TG_GIT_COMMIT"), ")");

#[derive(Parser)]
#[command(name = "tollgate", version = VERSION, about = "Token server for container registries")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct ConfigArg {
    /// Config file (YAML). Default: $TOLLGATE_CONFIG, else the embedded demo config.
    #[arg(short, long, env = "TOLLGATE_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the token server.
    Serve(ConfigArg),
    /// Validate the config, keys, accounts and policy, reporting every problem; exit 1 on any.
    CheckConfig {
        #[command(flatten)]
        config: ConfigArg,
        /// text (default), or json: {"ok", "errors", "warnings", "notes", "summary"}.
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        format: String,
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
    /// Rules files.
    #[command(subcommand)]
    Policy(PolicyCommand),
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
#[derive(clap::Args)]
struct AccountsFileArg {
    /// The accounts file. Default: the file of the first static provider in the config.
    #[arg(long)]
    file: Option<PathBuf>,
    #[command(flatten)]
    config: ConfigArg,
}

impl AccountsFileArg {
    fn path(&self) -> Result<PathBuf, String> {
        cli::robot::accounts_path(self.config.config.as_deref(), self.file.as_deref())
    }
}

#[derive(Subcommand)]
enum RobotCommand {
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

#[derive(Subcommand)]
enum TokenCommand {
    /// Revoke refresh tokens: one token, every token of a user, or all tokens.
    Revoke {
        #[command(flatten)]
        config: ConfigArg,
        /// The refresh token to revoke (read from standard input if "-").
        #[arg(long, conflicts_with_all = ["user", "all"])]
        token: Option<String>,
        /// Revoke every refresh token of this user issued until now.
        #[arg(long, conflicts_with = "all")]
        user: Option<String>,
        /// Revoke every refresh token issued until now.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
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
        /// password, refresh_token, device, workload or anonymous. Default: password, or anonymous without --user.
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

fn main() -> ExitCode {
    // Run through a link named docker-credential-tollgate: the credential helper protocol, nothing else.
    let argv0 = std::env::args_os().next().map(PathBuf::from);
    if argv0.as_deref().and_then(|p| p.file_name()).is_some_and(|n| n == "docker-credential-tollgate") {
        let action = std::env::args().nth(1).unwrap_or_default();
        return match cli::credhelper::run(&action) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                // Clients read the answer from stdout, the error included.
                println!("{message}");
                ExitCode::FAILURE
            }
        };
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(c) => cli::serve(c.config.as_deref()),
        Command::CheckConfig { config, format } => {
            let format = if format == "json" { cli::check::Format::Json } else { cli::check::Format::Text };
            cli::check::check_config(config.config.as_deref(), format)
        }
        Command::RegistryConfig { config, realm, out_dir } => {
            cli::registry_config(config.config.as_deref(), realm.as_deref(), out_dir.as_deref())
        }
        Command::Robot(cmd) => robot(cmd),
        Command::Token(TokenCommand::Revoke { config, token, user, all }) => {
            let token = match token.as_deref() {
                Some("-") => read_stdin().map(Some),
                other => Ok(other.map(str::to_string)),
            };
            token.and_then(|t| cli::token_revoke(config.config.as_deref(), t.as_deref(), user.as_deref(), all))
        }
        Command::Policy(PolicyCommand::Test { paths, config }) => cli::policy_test(&paths, config.config.as_deref()),
        Command::Policy(PolicyCommand::Explain {
            paths,
            config,
            scope,
            user,
            groups,
            provider,
            auth_method,
            client_ip,
            service,
            claims,
            json,
        }) => cli::policy_explain(
            &paths,
            config.config.as_deref(),
            cli::ExplainInput { scope, user, groups, provider, auth_method, client_ip, service, claims, json },
        ),
        Command::Policy(PolicyCommand::Example) => {
            print!("{}", tollgate::policy::EXAMPLE_POLICY);
            Ok(())
        }
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "tollgate", &mut std::io::stdout());
            Ok(())
        }
        Command::Init { dir } => cli::init::init(&dir),
        Command::KubeletCredentialProvider { username } => cli::kubelet::run(&username),
        Command::CredentialHelper { action } => cli::credhelper::run(&action),
        Command::Man => {
            let command = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(command)
                .render(&mut std::io::stdout())
                .map_err(|e| format!("writing the manual page: {e}"))
        }
        Command::HashPassword => cli::read_new_password().and_then(|pw| cli::hash_password(&pw)),
        Command::Login { registry, plain_http, provider, docker_config, authfile, no_browser } => {
            tollgate::cli::login::login(tollgate::cli::login::LoginOptions {
                registry,
                plain_http,
                provider,
                docker_config,
                authfile,
                no_browser,
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("tollgate: {message}");
            ExitCode::FAILURE
        }
    }
}

fn robot(cmd: RobotCommand) -> Result<(), String> {
    use cli::robot;
    match cmd {
        RobotCommand::Add { name, file, groups, no_groups, expires_in, description } => {
            robot::add(&file.path()?, robot::NewRobot { name, groups, no_groups, expires_in, description })
        }
        RobotCommand::List { file, json } => robot::list(&file.path()?, json),
        RobotCommand::Disable { name, file } => robot::set_disabled(&file.path()?, &name, true),
        RobotCommand::Enable { name, file } => robot::set_disabled(&file.path()?, &name, false),
        RobotCommand::Rotate { name, file, grace } => robot::rotate(&file.path()?, &name, grace.as_deref()),
        RobotCommand::Remove { name, file } => robot::remove(&file.path()?, &name),
    }
}

fn read_stdin() -> Result<String, String> {
    let mut s = String::new();
    std::io::stdin().read_to_string(&mut s).map_err(|e| format!("reading standard input: {e}"))?;
    Ok(s.trim_end_matches(['\n', '\r']).to_string())
}
