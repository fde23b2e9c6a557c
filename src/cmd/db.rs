//! `actormq db init`: creates the PostgreSQL store's tables (a broker also does it on its
//! first start), or checks that the ones there are this build's version.

use std::process::ExitCode;

use actormq::store::postgres::schema;

#[derive(clap::Subcommand)]
pub enum DbCommand {
    /// Create the tables of the PostgreSQL store, or check their version.
    Init(InitArgs),
}

#[derive(clap::Args)]
pub struct InitArgs {
    /// The database, e.g. postgres://actormq@127.0.0.1:5432/actormq.
    #[arg(long)]
    url: String,
}

pub async fn run(command: DbCommand) -> anyhow::Result<ExitCode> {
    match command {
        DbCommand::Init(args) => {
            let mut client = schema::connect(&args.url).await?;
            if let schema::Schema::Upgraded { from } = schema::init(&mut client, &args.url).await? {
                println!(
                    "{}: brought actormq schema version {from} up to {}",
                    schema::describe(&args.url),
                    schema::SCHEMA_VERSION
                );
            }
            println!(
                "{}: actormq schema version {} is ready",
                schema::describe(&args.url),
                schema::SCHEMA_VERSION
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
