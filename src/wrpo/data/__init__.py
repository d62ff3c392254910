from wrpo.data.dataset import QuadrupleCollator, QuadrupleDataset, load_quadruple_dataset
from wrpo.data.records import InMemoryRows, Quadruple, iter_quadruples, parse_quadruple, read_rows, row_sources
from wrpo.data.tokenize import EncodedQuadruple, QuadrupleEncoder, TruncationReport

__all__ = ["EncodedQuadruple", "InMemoryRows", "Quadruple", "QuadrupleCollator", "QuadrupleDataset", "QuadrupleEncoder",
           "TruncationReport", "iter_quadruples", "load_quadruple_dataset", "parse_quadruple", "read_rows",
           "row_sources"]
