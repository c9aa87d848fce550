// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

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
/// @dev Vectors are `bytes` of exactly 4 * nu bytes: nu big-endian two's-complement int32
/// fixed-point values in the order of ecjax/layout.py (bc, bd, ugb, ev, bt[j] for j != i; blocks
/// of length N). Only hashes of committed iterates are stored; the data lives in the events, and
/// a hash chain head = keccak256(abi.encode(head, agent, t, p, keccak256(data))) over every
/// upload lets anyone rebuild and authenticate the whole negotiation from the logs.
contract FCMPCCoordinator {
    /// @notice Deployment parameters (numbers the contract needs; the rest is in configHash).
    /// @param configHash keccak256 of the run configuration (model, weights, tolerance, p_max,
    /// fixed-point scale), computed off chain by ecjax.chain.config.
    /// @param nAgents agents in the community (prosumers and consumers), n.
    /// @param horizon prediction horizon N.
    /// @param wNum numerator of the combination weight w = wNum / wDen, 0 < w <= 1.
    /// @param wDen denominator of w.
    /// @param pMax last iteration of a step.
    /// @param period seconds an iteration stays open (deadline = opening time + period).
    /// @param kappa2 tolerance squared, in fixed-point units squared (scale^2).
    struct Config {
        bytes32 configHash;
        uint32 nAgents;
        uint32 horizon;
        uint32 wNum;
        uint32 wDen;
        uint32 pMax;
        uint64 period;
        uint256 kappa2;
    }

    /// @notice Per-block upper bounds of one prosumer, fixed point (lower bounds are 0).
    struct Bounds {
        uint32 bc;
        uint32 bd;
        uint32 ugb;
        uint32 ev;
        uint32 bt;
    }

    /// @notice State of the current iteration (one storage slot).
    struct Round {
        uint32 t; // MPC step
        uint16 p; // FC-MPC iteration
        uint40 deadline; // last timestamp at which uploads are accepted
        uint64 mask; // bit i set: prosumer i uploaded in this iteration
        uint8 count; // number of uploads in this iteration
        uint96 maxTheta2; // max_i theta_i^2 over the uploads of this iteration
    }

    // ---------------------------------------------------------------- errors
    /// @notice The sender is not a registered prosumer.
    error NotAgent(address sender);
    /// @notice The upload names another step or iteration than the open one (or p = 0 via `upload`).
    error WrongRound(uint32 t, uint32 p, uint32 currentT, uint32 currentP);
    /// @notice The prosumer already uploaded in this iteration.
    error AlreadyUploaded(uint256 agent);
    /// @notice The iteration's deadline has passed; it can only be closed.
    error DeadlinePassed(uint256 deadline, uint256 timestamp);
    /// @notice `closeIteration` before the deadline (the last upload closes it anyway).
    error DeadlineNotReached(uint256 deadline, uint256 timestamp);
    /// @notice A vector has not exactly 4 * nu bytes.
    error BadLength(uint256 length, uint256 expected);
    /// @notice Value `index` of the vector is outside [0, bound] (bound 0 for trades at p = 0).
    error OutOfBounds(uint256 index, uint256 value, uint256 bound);
    /// @notice The re-supplied previous iterate does not hash to the committed one.
    error PreviousIterateMismatch(bytes32 supplied, bytes32 committed);
    /// @notice Invalid deployment parameter (code: 1 agents, 2 ids, 3 w, 4 horizon/n, 5 period,
    /// 6 bounds, 7 duplicate agent, 8 pMax).
    error InvalidConfig(uint256 code);

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
    /// @notice Iteration closed; `terminated` means the step is over (next: step t + 1, p = 0).
    event IterationClosed(uint32 indexed t, uint32 indexed p, uint256 mask, uint256 maxTheta2, bool terminated);

    // ---------------------------------------------------------------- configuration
    bytes32 public immutable configHash;
    uint256 public immutable nAgents;
    uint256 public immutable horizon;
    /// @notice Length of an input vector u_i: (4 + n - 1) * N.
    uint256 public immutable nu;
    uint256 public immutable nProsumers;
    uint256 public immutable wNum;
    uint256 public immutable wDen;
    uint256 public immutable kappa2;
    uint32 public immutable pMax;
    uint64 public immutable period;
    /// @notice keccak256 of the zero vector (4 * nu zero bytes).
    bytes32 public immutable zeroHash;

    /// @notice Prosumer addresses, by prosumer index.
    address[] public agents;
    /// @notice Community index (0..n-1, as in ecjax/layout.py) of each prosumer.
    uint16[] public agentIds;
    /// @dev Prosumer index + 1 of an address (0: not an agent).
    mapping(address => uint256) internal indexPlusOne;
    /// @dev Packed bounds: bc << 224 | bd << 192 | ugb << 160 | ev << 128 | bt << 96.
    uint256[] internal packedBounds;
    /// @notice keccak256 of each prosumer's committed iterate (4 * nu bytes).
    bytes32[] public committedHash;

    Round public round;
    /// @notice Head of the hash chain over every upload since deployment.
    bytes32 public head;

    uint256 private constant LANE = 0xffffffff;
    uint256 private constant BT_MASK = ~(LANE << 96);

    constructor(Config memory c, address[] memory agents_, uint16[] memory ids_, Bounds[] memory bounds_) {
        uint256 np = agents_.length;
        if (np == 0 || np > 64) revert InvalidConfig(1);
        if (ids_.length != np || bounds_.length != np) revert InvalidConfig(2);
        if (c.wDen == 0 || c.wNum == 0 || c.wNum > c.wDen) revert InvalidConfig(3);
        if (c.horizon == 0 || c.nAgents < np || c.nAgents > 4096 || c.horizon > 4096) revert InvalidConfig(4);
        if (c.period == 0 || c.period > type(uint32).max) revert InvalidConfig(5);
        if (c.pMax > type(uint16).max) revert InvalidConfig(8);
        configHash = c.configHash;
        nAgents = c.nAgents;
        horizon = c.horizon;
        uint256 nu_ = (uint256(c.nAgents) + 3) * c.horizon;
        nu = nu_;
        nProsumers = np;
        wNum = c.wNum;
        wDen = c.wDen;
        kappa2 = c.kappa2;
        pMax = c.pMax;
        period = c.period;
        bytes32 z;
        assembly {
            let m := mload(0x40)
            let len := shl(2, nu_)
            // fresh memory past the free pointer is zero
            z := keccak256(m, len)
        }
        zeroHash = z;
        for (uint256 i; i < np; ++i) {
            address a = agents_[i];
            if (a == address(0)) revert InvalidConfig(1);
            if (indexPlusOne[a] != 0) revert InvalidConfig(7);
            if (ids_[i] >= c.nAgents || (i > 0 && ids_[i] <= ids_[i - 1])) revert InvalidConfig(2);
            Bounds memory b = bounds_[i];
            uint32 lim = type(uint32).max >> 1; // values are int32: bounds must be < 2^31
            if (b.bc > lim || b.bd > lim || b.ugb > lim || b.ev > lim || b.bt > lim) revert InvalidConfig(6);
            indexPlusOne[a] = i + 1;
            agents.push(a);
            agentIds.push(ids_[i]);
            packedBounds.push(
                (uint256(b.bc) << 224) | (uint256(b.bd) << 192) | (uint256(b.ugb) << 160) | (uint256(b.ev) << 128)
                    | (uint256(b.bt) << 96)
            );
            committedHash.push(z);
        }
        round = Round({t: 0, p: 0, deadline: uint40(block.timestamp + c.period), mask: 0, count: 0, maxTheta2: 0});
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
        uint64 bit = _open(r, i);
        uint256 len = nu << 2;
        if (uStar.length != len) revert BadLength(uStar.length, len);
        if (uPrev.length != len) revert BadLength(uPrev.length, len);
        bytes32 ph;
        assembly {
            let m := mload(0x40)
            calldatacopy(m, uPrev.offset, len)
            ph := keccak256(m, len)
        }
        bytes32 ch = committedHash[i];
        if (ph != ch) revert PreviousIterateMismatch(ph, ch);
        (uint256 th2, bytes32 h) = _combine(packedBounds[i], uStar, uPrev);
        committedHash[i] = h;
        bytes32 dh;
        assembly {
            let m := mload(0x40)
            calldatacopy(m, uStar.offset, len)
            dh := keccak256(m, len)
        }
        bytes32 hd = _chain(t, p, dh);
        emit Uploaded(t, p, i, uStar, th2, h, hd);
        _record(r, bit, th2);
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

    /// @notice Prosumer index of an address (reverts NotAgent).
    function agentIndex(address a) external view returns (uint256) {
        uint256 k = indexPlusOne[a];
        if (k == 0) revert NotAgent(a);
        return k - 1;
    }

    /// @notice Per-block bounds of prosumer i.
    function bounds(uint256 i) external view returns (Bounds memory b) {
        uint256 x = packedBounds[i];
        b.bc = uint32(x >> 224);
        b.bd = uint32(x >> 192);
        b.ugb = uint32(x >> 160);
        b.ev = uint32(x >> 128);
        b.bt = uint32(x >> 96);
    }

    // ---------------------------------------------------------------- internals

    function _agent() internal view returns (uint256) {
        uint256 k = indexPlusOne[msg.sender];
        if (k == 0) revert NotAgent(msg.sender);
        unchecked {
            return k - 1;
        }
    }

    function _open(Round memory r, uint256 i) internal view returns (uint64 bit) {
        if (block.timestamp > r.deadline) revert DeadlinePassed(r.deadline, block.timestamp);
        bit = uint64(1 << i); // i < 64
        if (r.mask & bit != 0) revert AlreadyUploaded(i);
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
        // th2 < nu * 2^62 < 2^96 (nu < 2^25 by the constructor checks): the cast is exact
        if (th2 > r.maxTheta2) r.maxTheta2 = uint96(th2);
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
        r.maxTheta2 = 0;
        r.deadline = uint40(block.timestamp + period);
        round = r;
    }

    /// @dev Revert OutOfBounds unless every lane of u is <= its block's bound (unsigned compare:
    /// a negative int32 reads as >= 2^31 > any bound).
    function _checkBounds(uint256 b, bytes calldata u) internal view {
        uint256 n_ = nu;
        uint256 N = horizon;
        bytes4 sel = OutOfBounds.selector;
        assembly {
            let bound := shr(224, b)
            let k := 0
            let blk := 0
            let l := 0
            let nw := shr(3, add(n_, 7))
            for { let w := 0 } lt(w, nw) { w := add(w, 1) } {
                let A := calldataload(add(u.offset, shl(5, w)))
                for { let sh := 224 } and(lt(l, n_), lt(sh, 256)) { sh := sub(sh, 32) } {
                    let a := and(shr(sh, A), LANE)
                    if gt(a, bound) {
                        let m := mload(0x40)
                        mstore(m, sel)
                        mstore(add(m, 4), l)
                        mstore(add(m, 36), a)
                        mstore(add(m, 68), bound)
                        revert(m, 100)
                    }
                    l := add(l, 1)
                    k := add(k, 1)
                    if eq(k, N) {
                        k := 0
                        blk := add(blk, 1)
                        let q := blk
                        if gt(q, 4) { q := 4 }
                        bound := and(shr(sub(224, shl(5, q)), b), LANE)
                    }
                }
            }
        }
    }

    /// @dev Bounds check of uStar, then lane by lane
    /// c = (wNum * a + (wDen - wNum) * b + wDen / 2) / wDen, theta2 += (c - b)^2; returns theta2
    /// and keccak256 of the packed committed iterate.
    function _combine(uint256 b, bytes calldata uStar, bytes calldata uPrev)
        internal
        view
        returns (uint256 th2, bytes32 h)
    {
        uint256 n_ = nu;
        uint256 N = horizon;
        uint256 num = wNum;
        uint256 den = wDen;
        bytes4 sel = OutOfBounds.selector;
        assembly {
            let cmp := sub(den, num)
            let half := shr(1, den)
            let out := mload(0x40)
            let bound := shr(224, b)
            let k := 0
            let blk := 0
            let l := 0
            let nw := shr(3, add(n_, 7))
            for { let w := 0 } lt(w, nw) { w := add(w, 1) } {
                let off := shl(5, w)
                let A := calldataload(add(uStar.offset, off))
                let B := calldataload(add(uPrev.offset, off))
                let C := 0
                for { let sh := 224 } and(lt(l, n_), lt(sh, 256)) { sh := sub(sh, 32) } {
                    let a := and(shr(sh, A), LANE)
                    if gt(a, bound) {
                        let m := mload(0x40)
                        mstore(m, sel)
                        mstore(add(m, 4), l)
                        mstore(add(m, 36), a)
                        mstore(add(m, 68), bound)
                        revert(m, 100)
                    }
                    let pb := and(shr(sh, B), LANE)
                    let c := div(add(add(mul(num, a), mul(cmp, pb)), half), den)
                    C := or(C, shl(sh, c))
                    // (c - pb) mod 2^256 squared equals (c - pb)^2 mod 2^256 (exact: < 2^64)
                    let d := sub(c, pb)
                    th2 := add(th2, mul(d, d))
                    l := add(l, 1)
                    k := add(k, 1)
                    if eq(k, N) {
                        k := 0
                        blk := add(blk, 1)
                        let q := blk
                        if gt(q, 4) { q := 4 }
                        bound := and(shr(sub(224, shl(5, q)), b), LANE)
                    }
                }
                mstore(add(out, off), C)
            }
            h := keccak256(out, shl(2, n_))
        }
    }
}
