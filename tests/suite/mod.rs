mod cli;
mod haproxy;
mod ledger;
mod orchestrator;
mod report;
mod snapshots;
mod watch;
