mod cli;
mod ledger;
mod orchestrator;
