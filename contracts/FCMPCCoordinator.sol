// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {FCMPCBase} from "./FCMPCBase.sol";

/// @title FC-MPC coordinator (Algorithm 2 of Sivianes et al., IFAC 2023; ecjax MODEL §6)
/// @notice Coordinates the feasible-cooperation MPC iterations of an energy community. The
/// prosumers (the only agents with decision variables) are fixed at deployment. For every MPC
/// step `t` the contract runs iterations `p = 0, 1, ...`:
///  - p = 0: every prosumer uploads its measured state (eb, eev) and its islanded plan u_i^0
///    (all trade blocks 0); this is the committed iterate u_i^0.
///  - p >= 1: every prosumer uploads its subproblem optimum u_i^{p,*} together with its committed
///    previous iterate u_i^{p-1} (checked against the stored hash). The contract commits
///    u_i^p = round((num * u_i^{p,*} + (den - num) * u_i^{p-1}) / den) lane by lane (round half
///    up; all lanes are >= 0) and computes theta_i^2 = ||u_i^p - u_i^{p-1}||_2^2 exactly.
/// An iteration closes when the last prosumer uploads, or (called by anyone) after its deadline;
/// a prosumer that did not upload keeps its previous iterate (theta_i = 0), except at p = 0 where
/// it gets the zero plan (no previous plan of this step exists). The step terminates when
/// max_i theta_i^2 <= kappa^2 (p >= 1) or p = pMax; then the next step starts at p = 0.
/// Optimal convex weights (beyond the paper; ecjax docs/fcmpc.md): an iteration p >= 1 may instead
/// combine prosumer i's optimum with its own weight lambda_i, lambda >= 0 and sum_i lambda_i <= 1
/// (every such iterate is a convex combination of jointly feasible points). lambda depends on
/// every optimum of the iteration, so such an iteration has two phases: the prosumers `submit`
/// their optima (checked and hashed, not yet combined), then any prosumer calls `proposeWeights`
/// with lambda and the submitted vectors; the contract checks lambda, commits every combination
/// and closes the iteration. An iteration is either uniform (`upload`) or weighted (`submit`).
/// @dev Vectors, the deployment parameters, the bounds check and the combination are those of
/// `FCMPCBase` (shared with the commit-and-challenge mode). Only hashes of committed iterates
/// are stored; the data lives in the events, and a hash chain
/// head = keccak256(abi.encode(head, agent, t, p, keccak256(data))) over every upload lets anyone
/// rebuild and authenticate the whole negotiation from the logs.
contract FCMPCCoordinator is FCMPCBase {
    /// @notice State of the current iteration (one storage slot).
    struct Round {
        uint32 t; // MPC step
        uint16 p; // FC-MPC iteration
        uint40 deadline; // last timestamp at which uploads are accepted
        uint64 mask; // bit i set: prosumer i uploaded in this iteration
        uint8 count; // number of uploads in this iteration
        uint8 weighted; // 1: a weighted iteration (optima submitted, combined by `proposeWeights`)
        uint88 maxTheta2; // max_i theta_i^2 over the uploads of this iteration
    }

    // ---------------------------------------------------------------- errors
    /// @notice The upload names another step or iteration than the open one (or p = 0 via `upload`).
    error WrongRound(uint32 t, uint32 p, uint32 currentT, uint32 currentP);
    /// @notice The prosumer already uploaded in this iteration.
    error AlreadyUploaded(uint256 agent);
    /// @notice The iteration's deadline has passed; it can only be closed.
    error DeadlinePassed(uint256 deadline, uint256 timestamp);
    /// @notice `closeIteration` before the deadline (the last upload closes it anyway).
    error DeadlineNotReached(uint256 deadline, uint256 timestamp);
    /// @notice The re-supplied previous iterate does not hash to the committed one.
    error PreviousIterateMismatch(bytes32 supplied, bytes32 committed);
    /// @notice `upload` in a weighted iteration, or `submit` in a uniform one.
    error MixedIteration(uint32 t, uint32 p);
    /// @notice `proposeWeights` for an iteration in which nobody submitted.
    error NoSubmissions(uint32 t, uint32 p);
    /// @notice The weights of this iteration were already proposed (the first proposal applies).
    error WeightsAlreadyProposed(uint32 t, uint32 p);
    /// @notice Weight `index` is negative (int32 lane, units of 1 / WEIGHT_ONE).
    error NegativeWeight(uint256 index, int256 value);
    /// @notice The weights sum above 1 (sum and WEIGHT_ONE, units of 1 / WEIGHT_ONE).
    error WeightsAboveOne(uint256 sum, uint256 one);
    /// @notice A re-supplied optimum does not hash to the one prosumer `agent` submitted.
    error SubmissionMismatch(uint256 agent, bytes32 supplied, bytes32 submitted);

    // ---------------------------------------------------------------- events
    /// @notice Iteration p = 0 upload: measured state and islanded plan u (= committed iterate).
    event InitialUploaded(
        uint32 indexed t, uint256 indexed agent, int32 eb, int32 eev, bytes u, bytes32 committedHash, bytes32 head
    );
    /// @notice Iteration p >= 1 upload: the subproblem optimum uStar; the committed iterate is
    /// rebuilt as combine(uStar, previous committed) and must hash to committedHash.
    event Uploaded(
        uint32 indexed t,
        uint32 indexed p,
        uint256 indexed agent,
        bytes uStar,
        uint256 theta2,
        bytes32 committedHash,
        bytes32 head
    );
    /// @notice Weighted iteration p >= 1: prosumer `agent`'s optimum uStar, checked and hashed; it
    /// is combined when the weights are proposed.
    event Submitted(uint32 indexed t, uint32 indexed p, uint256 indexed agent, bytes uStar, bytes32 head);
    /// @notice The weights of a weighted iteration, proposed by prosumer `agent`: `lam` holds
    /// lambda_i * WEIGHT_ONE as int32 lanes (4 * nProsumers bytes); theta2 and committedHash per
    /// prosumer (a prosumer that did not submit keeps its iterate: theta2 0, its previous hash).
    event WeightsApplied(
        uint32 indexed t,
        uint32 indexed p,
        uint256 indexed agent,
        bytes lam,
        uint256[] theta2,
        bytes32[] committedHash,
        bytes32 head
    );
    /// @notice Iteration closed; `terminated` means the step is over (next: step t + 1, p = 0).
    event IterationClosed(uint32 indexed t, uint32 indexed p, uint256 mask, uint256 maxTheta2, bool terminated);

    /// @notice keccak256 of the zero vector (4 * nu zero bytes).
    bytes32 public immutable zeroHash;

    /// @notice keccak256 of each prosumer's committed iterate (4 * nu bytes).
    bytes32[] public committedHash;

    Round public round;
    /// @notice Head of the hash chain over every upload since deployment.
    bytes32 public head;
    /// @notice keccak256 of each prosumer's optimum submitted in the open weighted iteration.
    mapping(uint256 => bytes32) public submittedHash;
    /// @notice (t << 16 | p) + 1 of the last iteration whose weights were proposed (0: none).
    uint64 public lastWeights;

    constructor(Config memory c, address[] memory agents_, uint16[] memory ids_, Bounds[] memory bounds_)
        FCMPCBase(c, agents_, ids_, bounds_)
    {
        uint256 len = nu << 2;
        bytes32 z;
        assembly {
            // fresh memory past the free pointer is zero
            z := keccak256(mload(0x40), len)
        }
        zeroHash = z;
        // committedHash = [z] * P, written directly (the length once, then the elements)
        uint256 np = agents_.length;
        assembly {
            sstore(committedHash.slot, np)
            mstore(0, committedHash.slot)
            let base := keccak256(0, 32)
            for { let i := 0 } lt(i, np) { i := add(i, 1) } { sstore(add(base, i), z) }
        }
        round = Round({
            t: 0, p: 0, deadline: uint40(block.timestamp + c.period), mask: 0, count: 0, weighted: 0, maxTheta2: 0
        });
    }

    // ---------------------------------------------------------------- uploads

    /// @notice Iteration p = 0 of step t: upload the measured state and the islanded plan.
    /// @param t the open MPC step.
    /// @param eb battery energy, fixed point.
    /// @param eev EV energy delivered since midnight, fixed point.
    /// @param u islanded plan u_i^0 (4 * nu bytes); trade blocks must be 0.
    function uploadInitial(uint32 t, int32 eb, int32 eev, bytes calldata u) external {
        uint256 i = _agent();
        Round memory r = round;
        if (t != r.t || r.p != 0) revert WrongRound(t, 0, r.t, r.p);
        uint64 bit = _open(r, i);
        uint256 len = nu << 2;
        if (u.length != len) revert BadLength(u.length, len);
        _checkBounds(packedBounds[i] & BT_MASK, u);
        bytes32 h;
        bytes32 dh;
        assembly {
            let m := mload(0x40)
            calldatacopy(m, u.offset, len)
            h := keccak256(m, len)
            // data hashed into the chain: int32 eb | int32 eev | u
            let m2 := add(m, len)
            mstore(m2, or(shl(224, and(eb, LANE)), shl(192, and(eev, LANE))))
            calldatacopy(add(m2, 8), u.offset, len)
            dh := keccak256(m2, add(len, 8))
        }
        committedHash[i] = h;
        bytes32 hd = _chain(t, 0, dh);
        emit InitialUploaded(t, i, eb, eev, u, h, hd);
        _record(r, bit, 0);
    }

    /// @notice Iteration p >= 1 of step t: upload the subproblem optimum.
    /// @param t the open MPC step.
    /// @param p the open iteration (>= 1).
    /// @param uStar the agent's subproblem optimum u_i^{p,*} (4 * nu bytes).
    /// @param uPrev the agent's committed iterate u_i^{p-1}, checked against the stored hash.
    function upload(uint32 t, uint32 p, bytes calldata uStar, bytes calldata uPrev) external {
        uint256 i = _agent();
        Round memory r = round;
        if (t != r.t || p != r.p || p == 0) revert WrongRound(t, p, r.t, r.p);
        if (r.weighted != 0) revert MixedIteration(t, p);
        uint64 bit = _open(r, i);
        uint256 len = nu << 2;
        if (uStar.length != len) revert BadLength(uStar.length, len);
        if (uPrev.length != len) revert BadLength(uPrev.length, len);
        bytes32 ph = _hash(uPrev);
        bytes32 ch = committedHash[i];
        if (ph != ch) revert PreviousIterateMismatch(ph, ch);
        (uint256 th2, bytes32 h) = _combine(packedBounds[i], uStar, uPrev);
        committedHash[i] = h;
        bytes32 hd = _chain(t, p, _hash(uStar));
        emit Uploaded(t, p, i, uStar, th2, h, hd);
        _record(r, bit, th2);
    }

    /// @notice Weighted iteration p >= 1 of step t: submit the subproblem optimum (bounds checked,
    /// hashed into the chain like an `upload`), to be combined by `proposeWeights`.
    /// @param t the open MPC step.
    /// @param p the open iteration (>= 1).
    /// @param uStar the agent's subproblem optimum u_i^{p,*} (4 * nu bytes).
    function submit(uint32 t, uint32 p, bytes calldata uStar) external {
        uint256 i = _agent();
        Round memory r = round;
        if (t != r.t || p != r.p || p == 0) revert WrongRound(t, p, r.t, r.p);
        if (r.count != 0 && r.weighted == 0) revert MixedIteration(t, p);
        uint64 bit = _open(r, i);
        uint256 len = nu << 2;
        if (uStar.length != len) revert BadLength(uStar.length, len);
        _checkBounds(packedBounds[i], uStar);
        bytes32 dh = _hash(uStar);
        submittedHash[i] = dh;
        bytes32 hd = _chain(t, p, dh);
        emit Submitted(t, p, i, uStar, hd);
        r.mask |= bit;
        unchecked {
            r.count += 1;
        }
        r.weighted = 1;
        round = r;
    }

    /// @notice Propose the weights of the open weighted iteration and apply them (any prosumer;
    /// the first proposal applies, before the deadline): checks lambda (4 * nProsumers bytes of
    /// int32 lanes lambda_i * WEIGHT_ONE: each >= 0, the sum <= WEIGHT_ONE), then for every
    /// prosumer that submitted commits u_i^p = combine(uStar_i, uPrev_i) with the weight
    /// lambda_i / WEIGHT_ONE and theta_i^2, and closes the iteration. The others keep their
    /// iterate (their entries of uStars, uPrevs are not read).
    /// @param lam the weights, int32 lanes.
    /// @param uStars the submitted optima, by prosumer index (checked against their hashes).
    /// @param uPrevs the committed iterates u_i^{p-1}, by prosumer index (checked likewise).
    function proposeWeights(
        uint32 t,
        uint32 p,
        bytes calldata lam,
        bytes[] calldata uStars,
        bytes[] calldata uPrevs
    ) external {
        uint256 k = _agent();
        uint64 key = ((uint64(t) << 16) | uint64(p)) + 1;
        if (lastWeights == key) revert WeightsAlreadyProposed(t, p);
        Round memory r = round;
        if (t != r.t || p != r.p || p == 0) revert WrongRound(t, p, r.t, r.p);
        if (block.timestamp > r.deadline) revert DeadlinePassed(r.deadline, block.timestamp);
        if (r.weighted == 0) revert NoSubmissions(t, p);
        uint256 np = nProsumers;
        if (uStars.length != np) revert BadLength(uStars.length, np);
        if (uPrevs.length != np) revert BadLength(uPrevs.length, np);
        uint256[] memory lanes = _weights(lam, np);
        lastWeights = key;
        uint256[] memory th = new uint256[](np);
        bytes32[] memory hs = new bytes32[](np);
        uint256 m2;
        for (uint256 i; i < np; ++i) {
            if (r.mask & (1 << i) == 0) {
                hs[i] = committedHash[i];
                continue;
            }
            (th[i], hs[i]) = _apply(i, lanes[i], uStars[i], uPrevs[i]);
            if (th[i] > m2) m2 = th[i];
        }
        bytes32 hd = _chain(t, p, _hash(lam));
        emit WeightsApplied(t, p, k, lam, th, hs, hd);
        r.maxTheta2 = uint88(m2); // < 2^87, as in _record
        _close(r);
    }

    /// @notice Close the open iteration after its deadline (anyone may call). Prosumers that did
    /// not upload keep their previous iterate (the zero plan at p = 0).
    function closeIteration() external {
        Round memory r = round;
        if (block.timestamp <= r.deadline) revert DeadlineNotReached(r.deadline, block.timestamp);
        _close(r);
    }

    // ---------------------------------------------------------------- views

    /// @notice The open round: step, iteration, deadline, upload mask and count, max theta^2, chain head.
    function roundState()
        external
        view
        returns (uint32 t, uint32 p, uint64 deadline, uint64 mask, uint16 count, uint256 maxTheta2, bytes32 head_)
    {
        Round memory r = round;
        return (r.t, r.p, r.deadline, r.mask, r.count, r.maxTheta2, head);
    }

    // ---------------------------------------------------------------- internals

    function _open(Round memory r, uint256 i) internal view returns (uint64 bit) {
        if (block.timestamp > r.deadline) revert DeadlinePassed(r.deadline, block.timestamp);
        bit = uint64(1 << i); // i < 64
        if (r.mask & bit != 0) revert AlreadyUploaded(i);
    }

    /// @dev The lanes of `lam` (np int32 lanes), reverting unless each is >= 0 and their sum <= WEIGHT_ONE.
    function _weights(bytes calldata lam, uint256 np) internal pure returns (uint256[] memory lanes) {
        if (lam.length != np << 2) revert BadLength(lam.length, np << 2);
        lanes = new uint256[](np);
        uint256 sum;
        for (uint256 i; i < np; ++i) {
            uint256 l = uint32(bytes4(lam[i << 2:(i << 2) + 4]));
            if (l > 0x7fffffff) revert NegativeWeight(i, int256(l) - 0x100000000);
            lanes[i] = l;
            sum += l;
        }
        if (sum > WEIGHT_ONE) revert WeightsAboveOne(sum, WEIGHT_ONE);
    }

    /// @dev Prosumer i's combination with the weight l / WEIGHT_ONE, after checking the vectors
    /// against its submitted and committed hashes; stores and returns the committed hash.
    function _apply(uint256 i, uint256 l, bytes calldata a, bytes calldata b) internal returns (uint256 t2, bytes32 h) {
        uint256 len = nu << 2;
        if (a.length != len) revert BadLength(a.length, len);
        if (b.length != len) revert BadLength(b.length, len);
        bytes32 sh = _hash(a);
        bytes32 sub = submittedHash[i];
        if (sh != sub) revert SubmissionMismatch(i, sh, sub);
        bytes32 ph = _hash(b);
        bytes32 ch = committedHash[i];
        if (ph != ch) revert PreviousIterateMismatch(ph, ch);
        (t2, h) = _combineWith(packedBounds[i], a, b, l, WEIGHT_ONE);
        committedHash[i] = h;
    }

    function _hash(bytes calldata d) internal pure returns (bytes32 h) {
        assembly {
            let m := mload(0x40)
            calldatacopy(m, d.offset, d.length)
            h := keccak256(m, d.length)
        }
    }

    function _chain(uint32 t, uint32 p, bytes32 dataHash) internal returns (bytes32 hd) {
        hd = keccak256(abi.encode(head, msg.sender, t, p, dataHash));
        head = hd;
    }

    function _record(Round memory r, uint64 bit, uint256 th2) internal {
        r.mask |= bit;
        unchecked {
            r.count += 1;
        }
        // th2 < nu * 2^62 < 2^87 (nu < 2^25 by the constructor checks): the cast is exact
        if (th2 > r.maxTheta2) r.maxTheta2 = uint88(th2);
        if (r.count == nProsumers) {
            _close(r);
        } else {
            round = r;
        }
    }

    function _close(Round memory r) internal {
        uint256 m2 = r.maxTheta2;
        bool done = r.p == pMax || (r.p != 0 && m2 <= kappa2);
        emit IterationClosed(r.t, r.p, r.mask, m2, done);
        if (r.p == 0 && r.count < nProsumers) {
            bytes32 z = zeroHash;
            uint256 np = nProsumers;
            for (uint256 i; i < np; ++i) {
                if (r.mask & (1 << i) == 0) committedHash[i] = z;
            }
        }
        if (done) {
            r.t += 1;
            r.p = 0;
        } else {
            r.p += 1;
        }
        r.mask = 0;
        r.count = 0;
        r.weighted = 0;
        r.maxTheta2 = 0;
        r.deadline = uint40(block.timestamp + period);
        round = r;
    }
}
