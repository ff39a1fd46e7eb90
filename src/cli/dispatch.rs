//! The dispatcher: one parsed command line (`args.rs`) to the command that carries it out. Each command
//! returns a message for the user on failure; `main.rs` prints it once and sets the exit code.

use std::path::PathBuf;

use super::args::RegistryTarget;
use super::args::{AccountsFileArg, Cli, Command, PolicyCommand, RobotCommand, TokenCommand, WorkloadCommand};
use super::client::{credhelper, kubelet, login, tokens};
use super::stdin::{self, Part};
use super::{check, init, robot, workload};

fn target_of(registry: String, t: RegistryTarget) -> tokens::Target {
    tokens::Target {
        registry,
        plain_http: t.plain_http,
        ca_file: t.ca_file,
        docker_config: t.docker_config,
        user: t.login_user,
        password_stdin: t.password_stdin,
    }
}

/// Run the command `cli` names.
pub fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Serve(c) => super::serve(c.config.as_deref()),
        Command::CheckConfig { config, format, probe } => {
            let format = if format == "json" { check::Format::Json } else { check::Format::Text };
            check::check_config(config.config.as_deref(), format, probe)
        }
        Command::RegistryConfig { config, realm, out_dir } => {
            super::registry_config(config.config.as_deref(), realm.as_deref(), out_dir.as_deref())
        }
        Command::Robot(cmd) => run_robot(cmd),
        Command::Token(TokenCommand::Revoke { registry: Some(registry), id, user, target, .. }) => {
            tokens::run(target_of(registry, target), tokens::Action::Revoke { id, user })
        }
        Command::Token(TokenCommand::Revoke { config, token, id, user, all, registry: None, .. }) => {
            let token = match token.as_deref() {
                Some("-") => stdin::read("standard input", Part::Value).map(Some),
                other => Ok(other.map(str::to_string)),
            };
            token.and_then(|t| {
                super::token_revoke(config.config.as_deref(), t.as_deref(), id.as_deref(), user.as_deref(), all)
            })
        }
        Command::Token(TokenCommand::Create { registry, name, scope, expires, owner, target }) => {
            tokens::run(target_of(registry, target), tokens::Action::Create { name, scope, expires, owner })
        }
        Command::Token(TokenCommand::List { registry, all, user, expiring, json, target }) => {
            tokens::run(target_of(registry, target), tokens::Action::List { all, user, expiring, json })
        }
        Command::Token(TokenCommand::Rotate { registry, id, grace, expires, target }) => {
            tokens::run(target_of(registry, target), tokens::Action::Rotate { id, grace, expires })
        }
        Command::Invalidate { config, user, group, provider, url, secret_file, ca_file } => {
            super::invalidate::run(super::invalidate::InvalidateInput {
                config: config.config,
                user,
                group,
                provider,
                url,
                secret_file,
                ca_file,
            })
        }
        Command::Policy(PolicyCommand::Test { paths, config }) => super::policy_test(&paths, config.config.as_deref()),
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
        }) => super::policy_explain(
            &paths,
            config.config.as_deref(),
            super::ExplainInput { scope, user, groups, provider, auth_method, client_ip, service, claims, json },
        ),
        Command::Workload(WorkloadCommand::Verify { config, provider, token, scope, service, client_ip, json }) => {
            let token = match token.as_str() {
                "-" => stdin::read("standard input", Part::Value),
                file => workload::read_token_file(file),
            };
            token.and_then(|token| {
                workload::verify(
                    config.config.as_deref(),
                    workload::VerifyInput { provider, token, scopes: scope, service, client_ip, json },
                )
            })
        }
        Command::Policy(PolicyCommand::Example) => {
            print!("{}", crate::policy::EXAMPLE_POLICY);
            Ok(())
        }
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "tollgate", &mut std::io::stdout());
            Ok(())
        }
        Command::Init { dir } => init::init(&dir),
        Command::KubeletCredentialProvider { username } => kubelet::run(&username),
        Command::CredentialHelper { action } => credhelper::run(&action),
        Command::Man => {
            let command = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(command)
                .render(&mut std::io::stdout())
                .map_err(|e| format!("writing the manual page: {e}"))
        }
        Command::HashPassword => super::read_new_password().and_then(|pw| super::hash_password(&pw)),
        Command::Login { registry, plain_http, provider, docker_config, authfile, no_browser, ca_file } => {
            login::login(login::LoginOptions {
                registry,
                plain_http,
                provider,
                docker_config,
                authfile,
                no_browser,
                ca_file,
            })
        }
    }
}

fn run_robot(cmd: RobotCommand) -> Result<(), String> {
    match cmd {
        RobotCommand::Add { name, file, groups, no_groups, expires_in, description } => {
            robot::add(&accounts(&file)?, robot::NewRobot { name, groups, no_groups, expires_in, description })
        }
        RobotCommand::List { file, json } => robot::list(&accounts(&file)?, json),
        RobotCommand::Disable { name, file } => robot::set_disabled(&accounts(&file)?, &name, true),
        RobotCommand::Enable { name, file } => robot::set_disabled(&accounts(&file)?, &name, false),
        RobotCommand::Rotate { name, file, grace } => robot::rotate(&accounts(&file)?, &name, grace.as_deref()),
        RobotCommand::Remove { name, file } => robot::remove(&accounts(&file)?, &name),
    }
}

/// The accounts file `--file` and `--config` name.
fn accounts(arg: &AccountsFileArg) -> Result<PathBuf, String> {
    robot::accounts_path(arg.config.config.as_deref(), arg.file.as_deref())
}
