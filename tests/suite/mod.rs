mod cli;
mod ledger;
mod orchestrator;
mod report;
mod snapshots;
mod watch;
