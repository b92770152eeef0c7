//! The compact, stable number that events and tracking tokens carry for an [`Assignment`].
//!
//! Layout, from the least significant bit (the layout is a format: it never changes meaning,
//! and a new one would claim the reserved bits, which are zero in this one):
//!
//! | bits | field |
//! |---|---|
//! | 0..2 | kind: 0 control, 1 staging, 2 experiment (3 is not a code) |
//! | 2 | anonymous |
//! | 3..11 | `experiment_idx` |
//! | 11..19 | `arm_idx` |
//! | 19..51 | `experiment_id` |
//! | 51..83 | `arm_id` |
//! | 83..128 | reserved, zero |
//!
//! The code is a `u128` because an assignment does not fit in 64 bits: two full `u32` ids (the
//! catalog allows any id in `1..=u32::MAX`) already take 64, before the kind, the anonymous flag
//! and the indexes. Small values stay small: control is 0 and staging 1, so varint and hex
//! encodings of the commonest codes are one or two characters. Fields other than the kind and
//! the flag are zero for staging and control, which makes every assignment's code unique and
//! lets [`Assignment::from_code`] reject anything [`Assignment::code`] cannot produce.

use crate::{Assignment, Slice};

const KIND_MASK: u128 = 0b11;
const KIND_CONTROL: u128 = 0;
const KIND_STAGING: u128 = 1;
const KIND_EXPERIMENT: u128 = 2;
const ANONYMOUS_BIT: u128 = 1 << 2;
const EXPERIMENT_IDX_SHIFT: u32 = 3;
const ARM_IDX_SHIFT: u32 = 11;
const EXPERIMENT_ID_SHIFT: u32 = 19;
const ARM_ID_SHIFT: u32 = 51;
/// Bits in use; everything above is reserved.
pub const CODE_BITS: u32 = 83;

impl Assignment {
    /// This assignment as a number; see the [module docs](self) for the layout.
    pub fn code(self) -> u128 {
        let kind = match self.slice {
            Slice::Control => KIND_CONTROL,
            Slice::Staging => KIND_STAGING,
            Slice::Experiment { experiment_idx, arm_idx, experiment_id, arm_id } => {
                KIND_EXPERIMENT
                    | u128::from(experiment_idx) << EXPERIMENT_IDX_SHIFT
                    | u128::from(arm_idx) << ARM_IDX_SHIFT
                    | u128::from(experiment_id) << EXPERIMENT_ID_SHIFT
                    | u128::from(arm_id) << ARM_ID_SHIFT
            }
        };
        kind | if self.anonymous { ANONYMOUS_BIT } else { 0 }
    }

    /// The assignment a code stands for, or `None` for a number that is not the code of any.
    pub fn from_code(code: u128) -> Option<Assignment> {
        if code >> CODE_BITS != 0 {
            return None;
        }
        let anonymous = code & ANONYMOUS_BIT != 0;
        let fields = code >> EXPERIMENT_IDX_SHIFT;
        // The `as` casts below cut one field out of the code: truncation is the point.
        let slice = match code & KIND_MASK {
            KIND_CONTROL | KIND_STAGING if fields != 0 => return None,
            KIND_CONTROL => Slice::Control,
            KIND_STAGING => Slice::Staging,
            KIND_EXPERIMENT => Slice::Experiment {
                experiment_idx: (code >> EXPERIMENT_IDX_SHIFT) as u8,
                arm_idx: (code >> ARM_IDX_SHIFT) as u8,
                experiment_id: (code >> EXPERIMENT_ID_SHIFT) as u32,
                arm_id: (code >> ARM_ID_SHIFT) as u32,
            },
            _ => return None,
        };
        Some(Assignment { slice, anonymous })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn slice() -> impl Strategy<Value = Slice> {
        prop_oneof![
            Just(Slice::Staging),
            Just(Slice::Control),
            any::<(u8, u8, u32, u32)>().prop_map(|(experiment_idx, arm_idx, experiment_id, arm_id)| {
                Slice::Experiment { experiment_idx, arm_idx, experiment_id, arm_id }
            }),
        ]
    }

    proptest! {
        #[test]
        fn every_assignment_round_trips(slice in slice(), anonymous in any::<bool>()) {
            let assignment = Assignment { slice, anonymous };
            prop_assert_eq!(Assignment::from_code(assignment.code()), Some(assignment));
        }

        #[test]
        fn a_number_is_a_code_only_if_code_gives_it_back(code in any::<u128>(), low in any::<u8>()) {
            // Random u128s almost always have reserved bits set; mix in small numbers too.
            for code in [code, code >> (128 - CODE_BITS), u128::from(low)] {
                if let Some(assignment) = Assignment::from_code(code) {
                    prop_assert_eq!(assignment.code(), code);
                }
            }
        }
    }

    /// The layout is a format that events outlive: these numbers must never change.
    #[test]
    fn codes_are_pinned() {
        let check = |slice, anonymous, expected: u128| {
            let assignment = Assignment { slice, anonymous };
            assert_eq!(assignment.code(), expected, "{assignment:?}");
            assert_eq!(Assignment::from_code(expected), Some(assignment));
        };
        check(Slice::Control, false, 0);
        check(Slice::Staging, false, 1);
        check(Slice::Control, true, 4);
        check(Slice::Staging, true, 5);
        let slice = Slice::Experiment { experiment_idx: 2, arm_idx: 1, experiment_id: 7, arm_id: 3 };
        check(slice, false, 2 | 2 << 3 | 1 << 11 | 7 << 19 | 3 << 51);
        let slice = Slice::Experiment {
            experiment_idx: u8::MAX,
            arm_idx: u8::MAX,
            experiment_id: u32::MAX,
            arm_id: u32::MAX,
        };
        check(slice, true, (1 << CODE_BITS) - 1 - 1);
    }

    #[test]
    fn non_codes_are_rejected() {
        for code in [3, 7, 1 << CODE_BITS, u128::MAX, 1 << 3, 1 | 1 << 60] {
            assert_eq!(Assignment::from_code(code), None, "{code:#x}");
        }
    }
}
