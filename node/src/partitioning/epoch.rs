//! Which part of a partition's epoch each command checks, and which it bumps. One table,
//! exhaustive over the commands: a new command does not compile until it has a row here.
//! Frozen once shipped: changing a row changes which requests a replica refuses.
//!
//! | command          | checks version | checks conf_version | bumps version | bumps conf_version |
//! |------------------|----------------|---------------------|---------------|--------------------|
//! | read, write      | yes            | no                  | no            | no                 |
//! | split            | yes            | yes                 | yes           | no                 |
//! | merge            | yes            | yes                 | yes           | no                 |
//! | change replicas  | no             | yes                 | no            | yes                |
//! | transfer leader  | no             | no                  | no            | no                 |
//!
//! Why: a read or write is about keys, so only a change of the key span (version) makes it
//! go to the wrong partition; the replica set does not matter to it, and refusing it after a
//! replica move would only cost a retry. A split or merge computes new spans and replica
//! sets from the ones it was planned against, so both must still hold. A replica change
//! computes a new replica set from the current one. A leader transfer names a node that is
//! already a replica and changes nothing the epoch describes. (TiKV's
//! `admin_cmd_epoch_lookup` makes the same choices.)

use super::descriptor::RangeEpoch;

/// Every command a partition's log takes, as far as the epoch is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EpochCommand {
    Read,
    Write,
    Split,
    Merge,
    ChangeReplicas,
    TransferLeader,
}

/// One row of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochRule {
    pub check_version: bool,
    pub check_conf_version: bool,
    pub bump_version: bool,
    pub bump_conf_version: bool,
}

pub const fn rule(command: EpochCommand) -> EpochRule {
    let (check_version, check_conf_version, bump_version, bump_conf_version) = match command {
        EpochCommand::Read | EpochCommand::Write => (true, false, false, false),
        EpochCommand::Split | EpochCommand::Merge => (true, true, true, false),
        EpochCommand::ChangeReplicas => (false, true, false, true),
        EpochCommand::TransferLeader => (false, false, false, false),
    };
    EpochRule {
        check_version,
        check_conf_version,
        bump_version,
        bump_conf_version,
    }
}

/// Whether a command planned against `planned` may apply to a partition at `current`.
pub fn matches(command: EpochCommand, planned: RangeEpoch, current: RangeEpoch) -> bool {
    let rule = rule(command);
    (!rule.check_version || planned.version == current.version)
        && (!rule.check_conf_version || planned.conf_version == current.conf_version)
}

/// The epoch after `command` applies at `current`.
pub fn bumped(command: EpochCommand, current: RangeEpoch) -> RangeEpoch {
    let rule = rule(command);
    RangeEpoch {
        version: current.version + u64::from(rule.bump_version),
        conf_version: current.conf_version + u64::from(rule.bump_conf_version),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [EpochCommand; 6] = [
        EpochCommand::Read,
        EpochCommand::Write,
        EpochCommand::Split,
        EpochCommand::Merge,
        EpochCommand::ChangeReplicas,
        EpochCommand::TransferLeader,
    ];

    #[test]
    fn every_command_that_bumps_a_part_also_checks_it() {
        // Otherwise two such commands planned against one epoch could both apply, the
        // second against a state it never saw (split twice at different keys).
        for command in ALL {
            let r = rule(command);
            assert!(!r.bump_version || r.check_version, "{command:?}");
            assert!(!r.bump_conf_version || r.check_conf_version, "{command:?}");
        }
    }

    #[test]
    fn a_write_planned_before_a_split_is_refused_but_one_before_a_move_is_not() {
        let before = RangeEpoch {
            version: 1,
            conf_version: 1,
        };
        let after_split = bumped(EpochCommand::Split, before);
        let after_move = bumped(EpochCommand::ChangeReplicas, before);
        assert_eq!(
            after_split,
            RangeEpoch {
                version: 2,
                conf_version: 1
            }
        );
        assert!(!matches(EpochCommand::Write, before, after_split));
        assert!(matches(EpochCommand::Write, before, after_move));
        assert!(!matches(EpochCommand::Split, before, after_move));
        assert!(matches(EpochCommand::TransferLeader, before, after_split));
        assert_eq!(bumped(EpochCommand::Read, before), before);
    }
}
