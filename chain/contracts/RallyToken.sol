// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";

/// @title Rallypoint loyalty token
/// @notice ERC-20 minted by the payout actor in batches, each batch once (its payoutId);
///         holders move through tiers (Bronze, Silver, Gold, Diamond) by balance.
contract RallyToken is ERC20, AccessControl, Pausable {
    bytes32 public constant MINTER_ROLE = keccak256("MINTER_ROLE");
    bytes32 public constant TIER_MANAGER_ROLE = keccak256("TIER_MANAGER_ROLE");
    bytes32 public constant PAUSER_ROLE = keccak256("PAUSER_ROLE");
    uint256 public constant MAX_BATCH = 1000;
    uint8 public constant TIERS = 4;

    uint256[4] private _thresholds;
    mapping(bytes32 => bool) public minted;
    mapping(address => uint8) public tierOf;

    event PayoutMinted(bytes32 indexed payoutId, uint256 recipients, uint256 total);
    event TierUpgraded(address indexed account, uint8 fromTier, uint8 toTier);
    event TierThresholdsChanged(uint256[4] thresholds);

    error PayoutAlreadyMinted(bytes32 payoutId);
    error LengthMismatch(uint256 recipients, uint256 amounts);
    error BatchTooLarge(uint256 size, uint256 max);
    error BadThresholds();

    constructor(string memory name_, string memory symbol_, address admin, uint256[4] memory thresholds_)
        ERC20(name_, symbol_)
    {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(MINTER_ROLE, admin);
        _grantRole(TIER_MANAGER_ROLE, admin);
        _grantRole(PAUSER_ROLE, admin);
        _setThresholds(thresholds_);
    }

    /// @notice Mint amounts[i] to to[i]; refuses a payoutId already minted (exactly once).
    function mintBatch(bytes32 payoutId, address[] calldata to, uint256[] calldata amounts)
        external
        onlyRole(MINTER_ROLE)
        whenNotPaused
    {
        if (minted[payoutId]) revert PayoutAlreadyMinted(payoutId);
        if (to.length != amounts.length) revert LengthMismatch(to.length, amounts.length);
        if (to.length > MAX_BATCH) revert BatchTooLarge(to.length, MAX_BATCH);
        minted[payoutId] = true;
        uint256 total;
        for (uint256 i; i < to.length; ++i) {
            _mint(to[i], amounts[i]);
            total += amounts[i];
        }
        emit PayoutMinted(payoutId, to.length, total);
    }

    function tierThresholds() external view returns (uint256[4] memory) {
        return _thresholds;
    }

    /// @notice The tier (0 Bronze .. 3 Diamond) a balance reaches.
    function tierFor(uint256 balance) public view returns (uint8 tier) {
        for (uint8 i = TIERS; i > 0; --i) {
            if (balance >= _thresholds[i - 1]) return i - 1;
        }
        return 0;
    }

    function setTierThresholds(uint256[4] calldata thresholds_) external onlyRole(TIER_MANAGER_ROLE) {
        _setThresholds(thresholds_);
    }

    function pause() external onlyRole(PAUSER_ROLE) {
        _pause();
    }

    function unpause() external onlyRole(PAUSER_ROLE) {
        _unpause();
    }

    function _setThresholds(uint256[4] memory t) private {
        if (t[0] != 0 || t[1] <= t[0] || t[2] <= t[1] || t[3] <= t[2]) revert BadThresholds();
        _thresholds = t;
        emit TierThresholdsChanged(t);
    }

    /// @dev Every balance change (mint, transfer) stops while paused; a receiver whose
    ///      balance reaches a higher tier than it ever held gets TierUpgraded.
    function _update(address from, address to, uint256 value) internal override whenNotPaused {
        super._update(from, to, value);
        if (to != address(0)) {
            uint8 reached = tierFor(balanceOf(to));
            uint8 held = tierOf[to];
            if (reached > held) {
                tierOf[to] = reached;
                emit TierUpgraded(to, held, reached);
            }
        }
    }
}
