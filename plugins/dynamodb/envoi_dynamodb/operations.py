"""What the dynamo filter knows about DynamoDB's API, as data: one table, one line per operation.

Envoy's contrib filter keeps these rules in C++ lists (``dynamo_request_parser.cc``), so a new
AWS operation needs a code change and a release (envoyproxy/envoy#7240). Here a new operation is
one line in :data:`OPERATIONS`; the parser (:mod:`envoi_dynamodb.sniffer`) only knows the few
*kinds* of rule.

Envoy's rules are kept exactly (the ``ENVOY`` block); the lines marked ``envoi`` are what Envoy
misses (its operations outside these lists are ``table_missing``). Each is named in
``plugins/dynamodb/README.md``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType


class TableRule(enum.Enum):
    """Where an operation's request body names its table."""

    #: ``TableName`` (a string).
    TABLE_NAME = "TableName"
    #: The keys of ``RequestItems`` (an object): one table, or ``multiple_tables``.
    REQUEST_ITEMS = "RequestItems"
    #: ``TransactItems[].{ConditionCheck,Delete,Get,Put,Update}.TableName``: one table, or
    #: ``multiple_tables``; an item naming no table makes the whole request ``table_missing``.
    TRANSACT_ITEMS = "TransactItems"
    #: PartiQL: the table a ``Statement`` reads or writes (:mod:`envoi_dynamodb.partiql`).
    STATEMENT = "Statement"
    #: PartiQL batch: ``Statements[].Statement``, combined as ``TRANSACT_ITEMS`` combines.
    STATEMENTS = "Statements"
    #: PartiQL transaction: ``TransactStatements[].Statement``, combined the same way.
    TRANSACT_STATEMENTS = "TransactStatements"


_T = TableRule

_ENVOY: dict[str, TableRule] = {
    # Single-table operations (Envoy's SINGLE_TABLE_OPERATIONS).
    "CreateTable": _T.TABLE_NAME,
    "DeleteItem": _T.TABLE_NAME,
    "DeleteTable": _T.TABLE_NAME,
    "DescribeTable": _T.TABLE_NAME,
    "GetItem": _T.TABLE_NAME,
    "PutItem": _T.TABLE_NAME,
    "Query": _T.TABLE_NAME,
    "Scan": _T.TABLE_NAME,
    "UpdateItem": _T.TABLE_NAME,
    "UpdateTable": _T.TABLE_NAME,
    # Batch operations (BATCH_OPERATIONS): their responses' UnprocessedKeys are read too.
    "BatchGetItem": _T.REQUEST_ITEMS,
    "BatchWriteItem": _T.REQUEST_ITEMS,
    # Transactions (TRANSACT_OPERATIONS).
    "TransactGetItems": _T.TRANSACT_ITEMS,
    "TransactWriteItems": _T.TRANSACT_ITEMS,
}

_ENVOI: dict[str, TableRule] = {
    # envoi: PartiQL (Envoy: table_missing).
    "ExecuteStatement": _T.STATEMENT,
    "BatchExecuteStatement": _T.STATEMENTS,
    "ExecuteTransaction": _T.TRANSACT_STATEMENTS,
    # envoi: later single-table operations whose request names the table in TableName.
    "CreateBackup": _T.TABLE_NAME,
    "DescribeContinuousBackups": _T.TABLE_NAME,
    "UpdateContinuousBackups": _T.TABLE_NAME,
    "DescribeTimeToLive": _T.TABLE_NAME,
    "UpdateTimeToLive": _T.TABLE_NAME,
    "DescribeContributorInsights": _T.TABLE_NAME,
    "UpdateContributorInsights": _T.TABLE_NAME,
    "DescribeKinesisStreamingDestination": _T.TABLE_NAME,
    "EnableKinesisStreamingDestination": _T.TABLE_NAME,
    "DisableKinesisStreamingDestination": _T.TABLE_NAME,
    "UpdateKinesisStreamingDestination": _T.TABLE_NAME,
    "DescribeTableReplicaAutoScaling": _T.TABLE_NAME,
    "UpdateTableReplicaAutoScaling": _T.TABLE_NAME,
}

#: Operation name -> where its table is named. An operation not listed has no table
#: (``table_missing``), as in Envoy.
OPERATIONS: Mapping[str, TableRule] = MappingProxyType({**_ENVOY, **_ENVOI})

#: Operations whose responses list ``UnprocessedKeys`` (Envoy reads it for both; only
#: BatchGetItem fills it) and, beyond Envoy, ``UnprocessedItems`` (BatchWriteItem's).
BATCH_OPERATIONS = frozenset({"BatchGetItem", "BatchWriteItem"})

#: The members of a ``TransactItems`` entry that may name the table, in Envoy's order.
TRANSACT_ITEM_KINDS = ("ConditionCheck", "Delete", "Get", "Put", "Update")

#: 4xx ``__type`` values counted as ``error.<table>.<type>``: the response's ``__type`` must end
#: with one of these (``com.amazonaws.dynamodb.v20120810#ResourceNotFoundException``). Order
#: matters: the first suffix that matches wins (ItemCollectionSizeLimitExceededException before
#: LimitExceededException). Any other 4xx ``__type`` is ``empty_response_body``.
ERROR_TYPES: tuple[str, ...] = (
    # Envoy's SUPPORTED_ERROR_TYPES, in its order.
    "AccessDeniedException",
    "ConditionalCheckFailedException",
    "IdempotentParameterMismatchException",
    "IncompleteSignatureException",
    "ItemCollectionSizeLimitExceededException",
    "LimitExceededException",
    "MissingAuthenticationTokenException",
    "ProvisionedThroughputExceededException",
    "ResourceInUseException",
    "ResourceNotFoundException",
    "ThrottlingException",
    "TransactionCanceledException",
    "TransactionInProgressException",
    "UnrecognizedClientException",
    "ValidationException",
    "InvalidSignatureException",
    # envoi: 4xx types AWS documents that Envoy's list lacks.
    "RequestLimitExceeded",
    "TransactionConflictException",
    "ReplicatedWriteConflictException",
)
