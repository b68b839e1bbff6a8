"""The label store's tables, one import for all of them (Alembic's metadata and every caller).

The tables live in modules by concern: :mod:`db.schema_core` (studies, media, tracks, faces, predictions, the
correction history; the declarative base and naming convention), :mod:`db.schema_classes` (persons, roster,
segments), :mod:`db.schema_read` (the kept read model) and :mod:`db.schema_runs` (claims, ranges, detection
settings). Importing this module registers every table on ``Base.metadata``.
"""

from db.schema_classes import LectureSegment as LectureSegment
from db.schema_classes import Participant as Participant
from db.schema_classes import Person as Person
from db.schema_classes import PersonAssignment as PersonAssignment
from db.schema_classes import PersonCorrection as PersonCorrection
from db.schema_classes import PersonCorrectionKind as PersonCorrectionKind
from db.schema_classes import PersonTrack as PersonTrack
from db.schema_classes import RosterExpected as RosterExpected
from db.schema_core import NAMING_CONVENTION as NAMING_CONVENTION
from db.schema_core import AnalysisStatus as AnalysisStatus
from db.schema_core import Annotation as Annotation
from db.schema_core import AnnotationKind as AnnotationKind
from db.schema_core import Annotator as Annotator
from db.schema_core import Base as Base
from db.schema_core import EngagementWindow as EngagementWindow
from db.schema_core import Face as Face
from db.schema_core import Media as Media
from db.schema_core import MediaKind as MediaKind
from db.schema_core import PendingFeatures as PendingFeatures
from db.schema_core import Prediction as Prediction
from db.schema_core import ReviewSkip as ReviewSkip
from db.schema_core import Study as Study
from db.schema_core import Track as Track
from db.schema_core import utcnow as utcnow
from db.schema_read import ClassSum as ClassSum
from db.schema_read import ClassSumMedia as ClassSumMedia
from db.schema_read import FaceJudge as FaceJudge
from db.schema_read import FaceStatus as FaceStatus
from db.schema_read import FaceTally as FaceTally
from db.schema_read import MediaTotals as MediaTotals
from db.schema_read import QueueCount as QueueCount
from db.schema_read import StudyStatus as StudyStatus
from db.schema_read import StudyTally as StudyTally
from db.schema_runs import AnalysisClaim as AnalysisClaim
from db.schema_runs import AnalysisRange as AnalysisRange
from db.schema_runs import MediaDetection as MediaDetection
