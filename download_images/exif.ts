// img2dataset's `exif` field: json.dumps({tag: str(value).strip()}) over exifread 3.0's
// process_file(details=False) on the raw downloaded bytes (reference img2dataset.md 2.4). Our own
// reader of the same TIFF structure that reproduces what exifread prints, including its quirks:
// it finds the EXIF block the way exifread does (JPEG APP1 within the first ~4 KB of segments,
// WebP EXIF chunk, bare TIFF; PNG and everything else give "{}"), reads 1-byte values as 0 (as
// exifread-nocycle's s2n does), names unknown tags `Tag 0xNNNN`, prints lists, ratios and floats
// as Python does, skips MakerNote / UserComment / XMP, and escapes the JSON like Python
// (ensure_ascii). Where exifread raises, extractExif throws: callers store null, as img2dataset does.

export class ExifParseError extends Error {}

type TagKind = ReadonlyMap<number, string> | 'make_string' | 'make_string_uc' | { ifd: string };
type TagDef = readonly [name: string, kind?: TagKind];
type TagTable = ReadonlyMap<number, TagDef>;

// exifread's tag vocabulary (names and value labels are the output format, so they are verbatim).
const INTEROP_TAGS: TagTable = new Map<number, TagDef>([
  [0x0001, ['InteroperabilityIndex']],
  [0x0002, ['InteroperabilityVersion']],
  [0x1000, ['RelatedImageFileFormat']],
  [0x1001, ['RelatedImageWidth']],
  [0x1002, ['RelatedImageLength']],
]);
const GPS_TAGS: TagTable = new Map<number, TagDef>([
  [0x0000, ['GPSVersionID']],
  [0x0001, ['GPSLatitudeRef']],
  [0x0002, ['GPSLatitude']],
  [0x0003, ['GPSLongitudeRef']],
  [0x0004, ['GPSLongitude']],
  [0x0005, ['GPSAltitudeRef']],
  [0x0006, ['GPSAltitude']],
  [0x0007, ['GPSTimeStamp']],
  [0x0008, ['GPSSatellites']],
  [0x0009, ['GPSStatus']],
  [0x000a, ['GPSMeasureMode']],
  [0x000b, ['GPSDOP']],
  [0x000c, ['GPSSpeedRef']],
  [0x000d, ['GPSSpeed']],
  [0x000e, ['GPSTrackRef']],
  [0x000f, ['GPSTrack']],
  [0x0010, ['GPSImgDirectionRef']],
  [0x0011, ['GPSImgDirection']],
  [0x0012, ['GPSMapDatum']],
  [0x0013, ['GPSDestLatitudeRef']],
  [0x0014, ['GPSDestLatitude']],
  [0x0015, ['GPSDestLongitudeRef']],
  [0x0016, ['GPSDestLongitude']],
  [0x0017, ['GPSDestBearingRef']],
  [0x0018, ['GPSDestBearing']],
  [0x0019, ['GPSDestDistanceRef']],
  [0x001a, ['GPSDestDistance']],
  [0x001b, ['GPSProcessingMethod']],
  [0x001c, ['GPSAreaInformation']],
  [0x001d, ['GPSDate']],
  [0x001e, ['GPSDifferential']],
]);
const EXIF_TAGS: TagTable = new Map<number, TagDef>([
  [0x00fe, ['SubfileType', new Map<number, string>([[0, 'Full-resolution Image'], [1, 'Reduced-resolution image'], [2, 'Single page of multi-page image'], [3, 'Single page of multi-page reduced-resolution image'], [4, 'Transparency mask'], [5, 'Transparency mask of reduced-resolution image'], [6, 'Transparency mask of multi-page image'], [7, 'Transparency mask of reduced-resolution multi-page image'], [65537, 'Alternate reduced-resolution image'], [4294967295, 'invalid ']])]],
  [0x00ff, ['OldSubfileType', new Map<number, string>([[1, 'Full-resolution image'], [2, 'Reduced-resolution image'], [3, 'Single page of multi-page image']])]],
  [0x0100, ['ImageWidth']],
  [0x0101, ['ImageLength']],
  [0x0102, ['BitsPerSample']],
  [0x0103, ['Compression', new Map<number, string>([[1, 'Uncompressed'], [2, 'CCITT 1D'], [3, 'T4/Group 3 Fax'], [4, 'T6/Group 4 Fax'], [5, 'LZW'], [6, 'JPEG (old-style)'], [7, 'JPEG'], [8, 'Adobe Deflate'], [9, 'JBIG B&W'], [10, 'JBIG Color'], [32766, 'Next'], [32769, 'Epson ERF Compressed'], [32771, 'CCIRLEW'], [32773, 'PackBits'], [32809, 'Thunderscan'], [32895, 'IT8CTPAD'], [32896, 'IT8LW'], [32897, 'IT8MP'], [32898, 'IT8BL'], [32908, 'PixarFilm'], [32909, 'PixarLog'], [32946, 'Deflate'], [32947, 'DCS'], [34661, 'JBIG'], [34676, 'SGILog'], [34677, 'SGILog24'], [34712, 'JPEG 2000'], [34713, 'Nikon NEF Compressed'], [65000, 'Kodak DCR Compressed'], [65535, 'Pentax PEF Compressed']])]],
  [0x0106, ['PhotometricInterpretation']],
  [0x0107, ['Thresholding']],
  [0x0108, ['CellWidth']],
  [0x0109, ['CellLength']],
  [0x010a, ['FillOrder']],
  [0x010d, ['DocumentName']],
  [0x010e, ['ImageDescription']],
  [0x010f, ['Make']],
  [0x0110, ['Model']],
  [0x0111, ['StripOffsets']],
  [0x0112, ['Orientation', new Map<number, string>([[1, 'Horizontal (normal)'], [2, 'Mirrored horizontal'], [3, 'Rotated 180'], [4, 'Mirrored vertical'], [5, 'Mirrored horizontal then rotated 90 CCW'], [6, 'Rotated 90 CW'], [7, 'Mirrored horizontal then rotated 90 CW'], [8, 'Rotated 90 CCW']])]],
  [0x0115, ['SamplesPerPixel']],
  [0x0116, ['RowsPerStrip']],
  [0x0117, ['StripByteCounts']],
  [0x0118, ['MinSampleValue']],
  [0x0119, ['MaxSampleValue']],
  [0x011a, ['XResolution']],
  [0x011b, ['YResolution']],
  [0x011c, ['PlanarConfiguration']],
  [0x011d, ['PageName', 'make_string']],
  [0x011e, ['XPosition']],
  [0x011f, ['YPosition']],
  [0x0122, ['GrayResponseUnit', new Map<number, string>([[1, '0.1'], [2, '0.001'], [3, '0.0001'], [4, '1e-05'], [5, '1e-06']])]],
  [0x0123, ['GrayResponseCurve']],
  [0x0124, ['T4Options']],
  [0x0125, ['T6Options']],
  [0x0128, ['ResolutionUnit', new Map<number, string>([[1, 'Not Absolute'], [2, 'Pixels/Inch'], [3, 'Pixels/Centimeter']])]],
  [0x0129, ['PageNumber']],
  [0x012c, ['ColorResponseUnit']],
  [0x012d, ['TransferFunction']],
  [0x0131, ['Software']],
  [0x0132, ['DateTime']],
  [0x013b, ['Artist']],
  [0x013c, ['HostComputer']],
  [0x013d, ['Predictor', new Map<number, string>([[1, 'None'], [2, 'Horizontal differencing']])]],
  [0x013e, ['WhitePoint']],
  [0x013f, ['PrimaryChromaticities']],
  [0x0140, ['ColorMap']],
  [0x0141, ['HalftoneHints']],
  [0x0142, ['TileWidth']],
  [0x0143, ['TileLength']],
  [0x0144, ['TileOffsets']],
  [0x0145, ['TileByteCounts']],
  [0x0146, ['BadFaxLines']],
  [0x0147, ['CleanFaxData', new Map<number, string>([[0, 'Clean'], [1, 'Regenerated'], [2, 'Unclean']])]],
  [0x014a, ['SubIFDs']],
  [0x0148, ['ConsecutiveBadFaxLines']],
  [0x014c, ['InkSet', new Map<number, string>([[1, 'CMYK'], [2, 'Not CMYK']])]],
  [0x014d, ['InkNames']],
  [0x014e, ['NumberofInks']],
  [0x0150, ['DotRange']],
  [0x0151, ['TargetPrinter']],
  [0x0152, ['ExtraSamples', new Map<number, string>([[0, 'Unspecified'], [1, 'Associated Alpha'], [2, 'Unassociated Alpha']])]],
  [0x0153, ['SampleFormat', new Map<number, string>([[1, 'Unsigned'], [2, 'Signed'], [3, 'Float'], [4, 'Undefined'], [5, 'Complex int'], [6, 'Complex float']])]],
  [0x0154, ['SMinSampleValue']],
  [0x0155, ['SMaxSampleValue']],
  [0x0156, ['TransferRange']],
  [0x0157, ['ClipPath']],
  [0x015b, ['JPEGTables']],
  [0x0200, ['JPEGProc']],
  [0x0201, ['JPEGInterchangeFormat']],
  [0x0202, ['JPEGInterchangeFormatLength']],
  [0x0211, ['YCbCrCoefficients']],
  [0x0212, ['YCbCrSubSampling']],
  [0x0213, ['YCbCrPositioning', new Map<number, string>([[1, 'Centered'], [2, 'Co-sited']])]],
  [0x0214, ['ReferenceBlackWhite']],
  [0x02bc, ['ApplicationNotes']],
  [0x4746, ['Rating']],
  [0x828d, ['CFARepeatPatternDim']],
  [0x828e, ['CFAPattern']],
  [0x828f, ['BatteryLevel']],
  [0x8298, ['Copyright']],
  [0x829a, ['ExposureTime']],
  [0x829d, ['FNumber']],
  [0x83bb, ['IPTC/NAA']],
  [0x8769, ['ExifOffset']],
  [0x8773, ['InterColorProfile']],
  [0x8822, ['ExposureProgram', new Map<number, string>([[0, 'Unidentified'], [1, 'Manual'], [2, 'Program Normal'], [3, 'Aperture Priority'], [4, 'Shutter Priority'], [5, 'Program Creative'], [6, 'Program Action'], [7, 'Portrait Mode'], [8, 'Landscape Mode']])]],
  [0x8824, ['SpectralSensitivity']],
  [0x8825, ['GPSInfo', { ifd: 'GPS' }]],
  [0x8827, ['ISOSpeedRatings']],
  [0x8828, ['OECF']],
  [0x8829, ['Interlace']],
  [0x882a, ['TimeZoneOffset']],
  [0x882b, ['SelfTimerMode']],
  [0x8830, ['SensitivityType', new Map<number, string>([[0, 'Unknown'], [1, 'Standard Output Sensitivity'], [2, 'Recommended Exposure Index'], [3, 'ISO Speed'], [4, 'Standard Output Sensitivity and Recommended Exposure Index'], [5, 'Standard Output Sensitivity and ISO Speed'], [6, 'Recommended Exposure Index and ISO Speed'], [7, 'Standard Output Sensitivity, Recommended Exposure Index and ISO Speed']])]],
  [0x8832, ['RecommendedExposureIndex']],
  [0x8833, ['ISOSpeed']],
  [0x9000, ['ExifVersion', 'make_string']],
  [0x9003, ['DateTimeOriginal']],
  [0x9004, ['DateTimeDigitized']],
  [0x9010, ['OffsetTime']],
  [0x9011, ['OffsetTimeOriginal']],
  [0x9012, ['OffsetTimeDigitized']],
  [0x9101, ['ComponentsConfiguration', new Map<number, string>([[0, ''], [1, 'Y'], [2, 'Cb'], [3, 'Cr'], [4, 'Red'], [5, 'Green'], [6, 'Blue']])]],
  [0x9102, ['CompressedBitsPerPixel']],
  [0x9201, ['ShutterSpeedValue']],
  [0x9202, ['ApertureValue']],
  [0x9203, ['BrightnessValue']],
  [0x9204, ['ExposureBiasValue']],
  [0x9205, ['MaxApertureValue']],
  [0x9206, ['SubjectDistance']],
  [0x9207, ['MeteringMode', new Map<number, string>([[0, 'Unidentified'], [1, 'Average'], [2, 'CenterWeightedAverage'], [3, 'Spot'], [4, 'MultiSpot'], [5, 'Pattern'], [6, 'Partial'], [255, 'other']])]],
  [0x9208, ['LightSource', new Map<number, string>([[0, 'Unknown'], [1, 'Daylight'], [2, 'Fluorescent'], [3, 'Tungsten (incandescent light)'], [4, 'Flash'], [9, 'Fine weather'], [10, 'Cloudy weather'], [11, 'Shade'], [12, 'Daylight fluorescent (D 5700 - 7100K)'], [13, 'Day white fluorescent (N 4600 - 5400K)'], [14, 'Cool white fluorescent (W 3900 - 4500K)'], [15, 'White fluorescent (WW 3200 - 3700K)'], [17, 'Standard light A'], [18, 'Standard light B'], [19, 'Standard light C'], [20, 'D55'], [21, 'D65'], [22, 'D75'], [23, 'D50'], [24, 'ISO studio tungsten'], [255, 'other light source']])]],
  [0x9209, ['Flash', new Map<number, string>([[0, 'Flash did not fire'], [1, 'Flash fired'], [5, 'Strobe return light not detected'], [7, 'Strobe return light detected'], [9, 'Flash fired, compulsory flash mode'], [13, 'Flash fired, compulsory flash mode, return light not detected'], [15, 'Flash fired, compulsory flash mode, return light detected'], [16, 'Flash did not fire, compulsory flash mode'], [24, 'Flash did not fire, auto mode'], [25, 'Flash fired, auto mode'], [29, 'Flash fired, auto mode, return light not detected'], [31, 'Flash fired, auto mode, return light detected'], [32, 'No flash function'], [65, 'Flash fired, red-eye reduction mode'], [69, 'Flash fired, red-eye reduction mode, return light not detected'], [71, 'Flash fired, red-eye reduction mode, return light detected'], [73, 'Flash fired, compulsory flash mode, red-eye reduction mode'], [77, 'Flash fired, compulsory flash mode, red-eye reduction mode, return light not detected'], [79, 'Flash fired, compulsory flash mode, red-eye reduction mode, return light detected'], [89, 'Flash fired, auto mode, red-eye reduction mode'], [93, 'Flash fired, auto mode, return light not detected, red-eye reduction mode'], [95, 'Flash fired, auto mode, return light detected, red-eye reduction mode']])]],
  [0x920a, ['FocalLength']],
  [0x920b, ['FlashEnergy']],
  [0x920c, ['SpatialFrequencyResponse']],
  [0x920d, ['Noise']],
  [0x9211, ['ImageNumber']],
  [0x9212, ['SecurityClassification']],
  [0x9213, ['ImageHistory']],
  [0x9214, ['SubjectArea']],
  [0x9215, ['ExposureIndex']],
  [0x9216, ['TIFF/EPStandardID']],
  [0x927c, ['MakerNote']],
  [0x9286, ['UserComment', 'make_string_uc']],
  [0x9290, ['SubSecTime']],
  [0x9291, ['SubSecTimeOriginal']],
  [0x9292, ['SubSecTimeDigitized']],
  [0x9c9b, ['XPTitle']],
  [0x9c9c, ['XPComment']],
  [0x9c9d, ['XPAuthor', 'make_string']],
  [0x9c9e, ['XPKeywords']],
  [0x9c9f, ['XPSubject']],
  [0xa000, ['FlashPixVersion', 'make_string']],
  [0xa001, ['ColorSpace', new Map<number, string>([[1, 'sRGB'], [2, 'Adobe RGB'], [65535, 'Uncalibrated']])]],
  [0xa002, ['ExifImageWidth']],
  [0xa003, ['ExifImageLength']],
  [0xa004, ['RelatedSoundFile']],
  [0xa005, ['InteroperabilityOffset', { ifd: 'Interoperability' }]],
  [0xa20b, ['FlashEnergy']],
  [0xa20c, ['SpatialFrequencyResponse']],
  [0xa20e, ['FocalPlaneXResolution']],
  [0xa20f, ['FocalPlaneYResolution']],
  [0xa210, ['FocalPlaneResolutionUnit']],
  [0xa214, ['SubjectLocation']],
  [0xa215, ['ExposureIndex']],
  [0xa217, ['SensingMethod', new Map<number, string>([[1, 'Not defined'], [2, 'One-chip color area'], [3, 'Two-chip color area'], [4, 'Three-chip color area'], [5, 'Color sequential area'], [7, 'Trilinear'], [8, 'Color sequential linear']])]],
  [0xa300, ['FileSource', new Map<number, string>([[1, 'Film Scanner'], [2, 'Reflection Print Scanner'], [3, 'Digital Camera']])]],
  [0xa301, ['SceneType', new Map<number, string>([[1, 'Directly Photographed']])]],
  [0xa302, ['CVAPattern']],
  [0xa401, ['CustomRendered', new Map<number, string>([[0, 'Normal'], [1, 'Custom']])]],
  [0xa402, ['ExposureMode', new Map<number, string>([[0, 'Auto Exposure'], [1, 'Manual Exposure'], [2, 'Auto Bracket']])]],
  [0xa403, ['WhiteBalance', new Map<number, string>([[0, 'Auto'], [1, 'Manual']])]],
  [0xa404, ['DigitalZoomRatio']],
  [0xa405, ['FocalLengthIn35mmFilm']],
  [0xa406, ['SceneCaptureType', new Map<number, string>([[0, 'Standard'], [1, 'Landscape'], [2, 'Portrait'], [3, 'Night']])]],
  [0xa407, ['GainControl', new Map<number, string>([[0, 'None'], [1, 'Low gain up'], [2, 'High gain up'], [3, 'Low gain down'], [4, 'High gain down']])]],
  [0xa408, ['Contrast', new Map<number, string>([[0, 'Normal'], [1, 'Soft'], [2, 'Hard']])]],
  [0xa409, ['Saturation', new Map<number, string>([[0, 'Normal'], [1, 'Soft'], [2, 'Hard']])]],
  [0xa40a, ['Sharpness', new Map<number, string>([[0, 'Normal'], [1, 'Soft'], [2, 'Hard']])]],
  [0xa40b, ['DeviceSettingDescription']],
  [0xa40c, ['SubjectDistanceRange']],
  [0xa420, ['ImageUniqueID']],
  [0xa430, ['CameraOwnerName']],
  [0xa431, ['BodySerialNumber']],
  [0xa432, ['LensSpecification']],
  [0xa433, ['LensMake']],
  [0xa434, ['LensModel']],
  [0xa435, ['LensSerialNumber']],
  [0xa500, ['Gamma']],
  [0xc4a5, ['PrintIM']],
  [0xc61a, ['BlackLevel']],
  [0xea1c, ['Padding']],
  [0xea1d, ['OffsetSchema']],
  [0xfde8, ['OwnerName']],
  [0xfde9, ['SerialNumber']],
]);

const SUB_IFD_TABLES: Record<string, TagTable> = { GPS: GPS_TAGS, Interoperability: INTEROP_TAGS };

/** Tags skipped when details=False: XMP (ApplicationNotes), MakerNote, UserComment. */
const IGNORED_WITHOUT_DETAILS = new Set([0x02bc, 0x927c, 0x9286]);

/** TIFF field types: [byte length of one value] indexed by type number (0 = none, 13 = IFD). */
const TYPE_LENGTHS = [0, 1, 1, 2, 4, 8, 1, 1, 2, 4, 8, 4, 8, 4];
const SIGNED_TYPES = new Set([6, 8, 9, 10]);

// ---- Python value model: what exifread collects, printed the way Python's str()/repr() would.

/** A reduced fraction (Python's Fraction), or a raw one when the denominator is 0. */
class Ratio {
  readonly num: number;
  readonly den: number;
  constructor(num: number, den: number) {
    if (den === 0) {
      this.num = num;
      this.den = 0;
      return;
    }
    let g = gcd(Math.abs(num), Math.abs(den));
    if (den < 0) g = -g;
    this.num = num / g;
    this.den = den / g;
  }
  toString(): string {
    return this.den === 1 ? String(this.num) : `${this.num}/${this.den}`;
  }
}

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

/** A float read from the file: exifread keeps struct.unpack's 1-tuple. */
class FloatTuple {
  constructor(readonly value: number) {}
  toString(): string {
    return `(${pyFloatRepr(this.value)},)`;
  }
}

type PyScalar = number | Ratio | FloatTuple;
/** A tag's values: a str, undecodable bytes, or a list. */
type Values = { kind: 'str'; s: string } | { kind: 'bytes'; b: Uint8Array } | { kind: 'list'; items: PyScalar[] };

export function pyFloatRepr(x: number): string {
  if (Number.isNaN(x)) return 'nan';
  if (!Number.isFinite(x)) return x > 0 ? 'inf' : '-inf';
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  const [mant, expStr] = x.toExponential().split('e');
  const exp = Number(expStr);
  const neg = mant.startsWith('-');
  const digits = mant.replace('-', '').replace('.', '');
  const sign = neg ? '-' : '';
  if (exp < -4 || exp >= 16) {
    const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    const e = Math.abs(exp);
    return `${sign}${m}e${exp < 0 ? '-' : '+'}${e < 10 ? '0' : ''}${e}`;
  }
  if (exp >= 0) {
    const int = digits.length > exp + 1 ? digits.slice(0, exp + 1) : digits.padEnd(exp + 1, '0');
    const frac = digits.length > exp + 1 ? digits.slice(exp + 1) : '0';
    return `${sign}${int}.${frac}`;
  }
  return `${sign}0.${'0'.repeat(-exp - 1)}${digits}`;
}

function pyScalarRepr(v: PyScalar): string {
  return typeof v === 'number' ? String(v) : v.toString();
}

function pyListRepr(items: readonly PyScalar[]): string {
  return `[${items.map(pyScalarRepr).join(', ')}]`;
}

/** Python's repr() of a str (used when a value table meets a character). */
function pyStrRepr(s: string): string {
  const quote = s.includes("'") && !s.includes('"') ? '"' : "'";
  let out = quote;
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (ch === quote || ch === '\\') out += `\\${ch}`;
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\t') out += '\\t';
    else if (c < 0x20 || c === 0x7f) out += `\\x${c.toString(16).padStart(2, '0')}`;
    else if (c >= 0x80 && c < 0xa0) out += `\\x${c.toString(16).padStart(2, '0')}`;
    else out += ch;
  }
  return out + quote;
}

/** Python's repr() of bytes. */
function pyBytesRepr(b: Uint8Array): string {
  const hasSingle = b.includes(0x27);
  const quote = hasSingle && !b.includes(0x22) ? '"' : "'";
  let out = `b${quote}`;
  for (const c of b) {
    if (c === quote.charCodeAt(0) || c === 0x5c) out += `\\${String.fromCharCode(c)}`;
    else if (c === 0x09) out += '\\t';
    else if (c === 0x0a) out += '\\n';
    else if (c === 0x0d) out += '\\r';
    else if (c < 0x20 || c >= 0x7f) out += `\\x${c.toString(16).padStart(2, '0')}`;
    else out += String.fromCharCode(c);
  }
  return out + quote;
}

function valuesStr(v: Values): string {
  if (v.kind === 'str') return v.s;
  if (v.kind === 'bytes') return pyBytesRepr(v.b);
  return pyListRepr(v.items);
}

function valuesLength(v: Values): number {
  return v.kind === 'str' ? [...v.s].length : v.kind === 'bytes' ? v.b.length : v.items.length;
}

/** Python's str.strip(chars) for an explicit character set. */
function stripChars(s: string, chars: string): string {
  let a = 0;
  let b = s.length;
  while (a < b && chars.includes(s[a])) a++;
  while (b > a && chars.includes(s[b - 1])) b--;
  return s.slice(a, b);
}

const PY_WHITESPACE = '\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000';

/** exifread's make_string: printable code points of a byte/number sequence. */
function makeString(v: Values): string {
  let s = '';
  if (v.kind === 'bytes') {
    for (const c of v.b) if (c >= 32 && c < 256) s += String.fromCharCode(c);
  } else if (v.kind === 'list') {
    for (const x of v.items) if (typeof x === 'number' && x >= 32 && x < 256) s += String.fromCharCode(x);
  }
  if (!s) {
    if (v.kind === 'list') {
      s = v.items.map(pyScalarRepr).join('');
      if (s.length > 0 && /^0+$/.test(s)) return '';
    } else {
      s = valuesStr(v);
    }
  }
  return stripChars(s, ' \x00');
}

function sliceValues(v: Values, start: number, end?: number): Values {
  if (v.kind === 'str') return { kind: 'str', s: [...v.s].slice(start, end).join('') };
  if (v.kind === 'bytes') return { kind: 'bytes', b: v.b.slice(start, end) };
  return { kind: 'list', items: v.items.slice(start, end) };
}

/** exifread's make_string_uc: drops a user comment's 8-byte character-code prefix first. */
function makeStringUc(v: Values): string {
  if (v.kind !== 'str' && ['ASCII', 'UNICODE', 'JIS', ''].includes(makeString(sliceValues(v, 0, 8)).toUpperCase())) {
    v = sliceValues(v, 8);
  }
  return makeString(v);
}

/** json.dumps(str) with ensure_ascii: everything outside ' '..'~' escaped. */
function pyJsonString(s: string): string {
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x22) out += '\\"';
    else if (c === 0x5c) out += '\\\\';
    else if (c >= 0x20 && c <= 0x7e) out += s[i];
    else if (c === 0x0a) out += '\\n';
    else if (c === 0x0d) out += '\\r';
    else if (c === 0x09) out += '\\t';
    else if (c === 0x08) out += '\\b';
    else if (c === 0x0c) out += '\\f';
    else out += `\\u${c.toString(16).padStart(4, '0')}`;
  }
  return out + '"';
}

/** json.dumps(dict) with Python's default separators. */
export function pyJsonObject(entries: Iterable<[string, string]>): string {
  const parts: string[] = [];
  for (const [k, v] of entries) parts.push(`${pyJsonString(k)}: ${pyJsonString(v)}`);
  return `{${parts.join(', ')}}`;
}

// ---- exifread's file walk, over a buffer standing in for the file handle.

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function at(data: Uint8Array, i: number): number {
  if (i < 0 || i >= data.length) throw new ExifParseError('index out of range');
  return data[i];
}

const latin1 = (data: Uint8Array, a: number, b: number): string => Buffer.from(data.subarray(Math.max(0, a), Math.max(0, b))).toString('latin1');

interface ExifStart {
  offset: number;
  endian: string;
}

/** Where the TIFF header starts, as exifread's _determine_type finds it; null = no EXIF. */
function findExif(file: Uint8Array): ExifStart | null {
  const head = file.subarray(0, 12);
  const endianAt = (pos: number): string => {
    if (pos >= file.length) throw new ExifParseError('no endian byte');
    return String.fromCharCode(file[pos]);
  };
  if (latin1(head, 0, 2) === 'II' || latin1(head, 0, 2) === 'MM') return { offset: 0, endian: endianAt(0) };
  if (latin1(head, 4, 12) === 'ftypheic') return null;
  if (latin1(head, 0, 4) === 'RIFF' && latin1(head, 8, 12) === 'WEBP') {
    const vp8x = file.subarray(12, 17);
    if (latin1(vp8x, 0, 4) !== 'VP8X' || vp8x.length < 5 || !(vp8x[4] & 8)) return null;
    let pos = 30;
    for (;;) {
      const chunk = file.subarray(pos, pos + 8);
      if (chunk.length !== 8) return null;
      if (latin1(chunk, 0, 4) === 'EXIF') return { offset: pos + 8, endian: endianAt(pos + 8) };
      pos += 8 + Buffer.from(chunk).readUInt32LE(4);
    }
  }
  if (head.length >= 2 && head[0] === 0xff && head[1] === 0xd8) return findJpegExif(file, head);
  return null;
}

const APP0_NAMES = new Set(['JFIF', 'JFXX', 'OLYM', 'Phot']);

function findJpegExif(file: Uint8Array, first: Uint8Array): ExifStart | null {
  let data: Uint8Array = first;
  let pos = Math.min(12, file.length);
  let base = 2;
  // APP0-style segments are skipped by reading ahead, as exifread does.
  while (at(data, 2) === 0xff && APP0_NAMES.has(latin1(data, 6, 10))) {
    const length = at(data, 4) * 256 + at(data, 5);
    pos = length - 8 < 0 ? file.length : Math.min(file.length, pos + length - 8);
    const next = file.subarray(pos, pos + 10);
    pos += next.length;
    data = Buffer.concat([Buffer.from([0xff, 0x00]), next]);
    base = base > 2 ? base + length + 4 - 2 : length + 4;
  }
  data = file.subarray(0, base + 4000);
  const incrementAt = (b: number): number => at(data, b + 2) * 256 + at(data, b + 3) + 2;
  for (;;) {
    const marker = latin1(data, base, base + 2);
    if (marker === '\xff\xe1') {
      if (latin1(data, base + 4, base + 8) === 'Exif') {
        base -= 2;
        break;
      }
      base += incrementAt(base);
    } else if (marker === '\xff\xdb') {
      break;
    } else if (['\xff\xe0', '\xff\xe2', '\xff\xee', '\xff\xd8', '\xff\xec'].includes(marker)) {
      base += incrementAt(base);
    } else {
      let inc: number;
      try {
        inc = incrementAt(base);
      } catch {
        return null;
      }
      base += inc;
    }
  }
  const start = base + 12;
  if (at(data, 2 + base) === 0xff) {
    const tag = latin1(data, 6 + base, 11 + base);
    if (tag.startsWith('Exif') || tag === 'Ducky' || tag === 'Adobe') {
      if (start >= file.length) throw new ExifParseError('no endian byte');
      return { offset: start, endian: String.fromCharCode(file[start]) };
    }
  }
  return null;
}

class ExifReader {
  readonly tags = new Map<string, string>();
  private readonly values = new Map<string, Values>();

  constructor(
    private readonly file: Uint8Array,
    private readonly offset: number,
    private readonly littleEndian: boolean,
  ) {}

  /** exifread's s2n: a short read of 2+ bytes raises; a 1-byte or empty read gives 0. */
  s2n(off: number, length: 2 | 4 | 1, signed = false): number {
    const pos = this.offset + off;
    if (pos < 0) throw new ExifParseError('negative seek value');
    const buf = Buffer.from(this.file.subarray(pos, pos + length));
    if (buf.length === 0 || buf.length === 1) return 0;
    if (buf.length !== length) throw new ExifParseError('unpack requires a buffer of more bytes');
    if (length === 2) return signed ? (this.littleEndian ? buf.readInt16LE(0) : buf.readInt16BE(0)) : this.littleEndian ? buf.readUInt16LE(0) : buf.readUInt16BE(0);
    return signed ? (this.littleEndian ? buf.readInt32LE(0) : buf.readInt32BE(0)) : this.littleEndian ? buf.readUInt32LE(0) : buf.readUInt32BE(0);
  }

  listIfds(): number[] {
    const seen = new Set<number>();
    const ifds: number[] = [];
    let i = this.s2n(4, 4);
    while (i) {
      if (seen.has(i)) break;
      seen.add(i);
      ifds.push(i);
      const entries = this.s2n(i, 2);
      const next = this.s2n(i + 2 + 12 * entries, 4);
      i = next === i ? 0 : next;
    }
    return ifds;
  }

  valuesOf(name: string): Values | undefined {
    return this.values.get(name);
  }

  dumpIfd(ifd: unknown, ifdName: string, table: TagTable = EXIF_TAGS): void {
    // exifread catches the TypeError a non-integer offset causes and skips the IFD.
    if (typeof ifd !== 'number') return;
    const entries = this.s2n(ifd, 2);
    for (let i = 0; i < entries; i++) {
      const entry = ifd + 2 + 12 * i;
      const tag = this.s2n(entry, 2);
      const def = table.get(tag);
      const tagName = def ? def[0] : `Tag 0x${tag.toString(16).toUpperCase().padStart(4, '0')}`;
      if (!IGNORED_WITHOUT_DETAILS.has(tag)) this.processTag(ifdName, def, entry, tagName);
    }
  }

  private readField(fieldType: number, count: number, offset: number): Values {
    if (fieldType === 2) {
      if (count === 0) return { kind: 'str', s: '' };
      const pos = this.offset + offset;
      if (pos < 0) throw new ExifParseError('negative seek value');
      let raw = this.file.subarray(pos, pos + count);
      const nul = raw.indexOf(0);
      if (nul >= 0) raw = raw.subarray(0, nul);
      try {
        return { kind: 'str', s: utf8.decode(raw) };
      } catch {
        return { kind: 'bytes', b: Uint8Array.from(raw) };
      }
    }
    const items: PyScalar[] = [];
    const len = TYPE_LENGTHS[fieldType];
    const signed = SIGNED_TYPES.has(fieldType);
    // exifread reads nothing for 1000+ values (MakerNote excepted, and it is skipped here).
    if (count < 1000) {
      for (let k = 0; k < count; k++, offset += len) {
        if (fieldType === 5 || fieldType === 10) {
          items.push(new Ratio(this.s2n(offset, 4, signed), this.s2n(offset + 4, 4, signed)));
        } else if (fieldType === 11 || fieldType === 12) {
          const pos = this.offset + offset;
          if (pos < 0) throw new ExifParseError('negative seek value');
          const b = Buffer.from(this.file.subarray(pos, pos + len));
          if (b.length !== len) throw new ExifParseError('unpack requires a buffer of more bytes');
          const v = fieldType === 11 ? (this.littleEndian ? b.readFloatLE(0) : b.readFloatBE(0)) : this.littleEndian ? b.readDoubleLE(0) : b.readDoubleBE(0);
          items.push(new FloatTuple(v));
        } else {
          items.push(this.s2n(offset, len as 1 | 2 | 4, signed));
        }
      }
    }
    return { kind: 'list', items };
  }

  private processTag(ifdName: string, def: TagDef | undefined, entry: number, tagName: string): void {
    const fieldType = this.s2n(entry + 2, 2);
    if (!(fieldType > 0 && fieldType < TYPE_LENGTHS.length)) return;
    const typeLength = TYPE_LENGTHS[fieldType];
    const count = this.s2n(entry + 4, 4);
    let offset = entry + 8;
    if (count * typeLength > 4) offset = this.s2n(offset, 4);
    const values = this.readField(fieldType, count, offset);

    let printable: string;
    if (count === 1 && fieldType !== 2) {
      // A list of one value read; Python's values[0].
      printable = values.kind === 'list' && values.items.length > 0 ? pyScalarRepr(values.items[0]) : valuesStr(values);
    } else if (count > 50 && valuesLength(values) > 20 && values.kind !== 'str') {
      printable = valuesStr(sliceValues(values, 0, 20)).slice(0, -1) + ', ... ]';
    } else {
      printable = valuesStr(values);
    }
    const kind = def?.[1];
    if (kind !== undefined) {
      if (kind === 'make_string') printable = makeString(values);
      else if (kind === 'make_string_uc') printable = makeStringUc(values);
      else if (kind instanceof Map) printable = mapValues(values, kind);
      else if ('ifd' in kind) {
        const first = firstValue(values);
        if (first !== undefined) this.dumpIfd(first, kind.ifd, SUB_IFD_TABLES[kind.ifd]);
      }
    }
    const key = `${ifdName} ${tagName}`;
    this.tags.set(key, printable);
    this.values.set(key, values);
  }
}

/** values[0] as Python would index it (undefined for an empty sequence). */
function firstValue(v: Values): unknown {
  if (v.kind === 'str') return [...v.s][0];
  if (v.kind === 'bytes') return v.b.length ? v.b[0] : undefined;
  return v.items[0];
}

/** A value table applied per value: label, or Python's repr() of the value when unknown. */
function mapValues(v: Values, table: ReadonlyMap<number, string>): string {
  let out = '';
  if (v.kind === 'str') {
    for (const ch of v.s) out += pyStrRepr(ch);
  } else if (v.kind === 'bytes') {
    for (const c of v.b) out += table.get(c) ?? String(c);
  } else {
    for (const x of v.items) {
      // An integral ratio hashes and compares equal to the int key, as in Python.
      const key = typeof x === 'number' ? x : x instanceof Ratio && x.den === 1 ? x.num : undefined;
      out += (key !== undefined ? table.get(key) : undefined) ?? pyScalarRepr(x);
    }
  }
  return out;
}

const ENDIANS = new Set(['I', 'M', '\x01', 'd']);

/** The tags exifread.process_file(details=False) returns, printed; throws where it raises. */
export function readExifTags(input: Uint8Array): Map<string, string> {
  const start = findExif(input);
  if (!start) return new Map();
  // exifread looks the endian byte up in a table for its log line; anything else raises.
  if (!ENDIANS.has(start.endian)) throw new ExifParseError(`unknown endian byte ${JSON.stringify(start.endian)}`);
  const reader = new ExifReader(input, start.offset, start.endian === 'I');
  const ifds = reader.listIfds();
  ifds.forEach((ifd, n) => reader.dumpIfd(ifd, n === 0 ? 'Image' : n === 1 ? 'Thumbnail' : `IFD ${n}`));
  const exifOffset = reader.valuesOf('Image ExifOffset');
  if (exifOffset) {
    const first = firstValue(exifOffset);
    if (first === undefined) throw new ExifParseError('ExifOffset has no value');
    reader.dumpIfd(first, 'EXIF');
  }
  return reader.tags;
}

/**
 * img2dataset's `exif` value for the raw downloaded bytes: a JSON string of exifread-style tags,
 * `"{}"` when there is no EXIF. Throws where exifread would raise (img2dataset then stores null).
 */
export async function extractExif(input: Buffer): Promise<string> {
  const tags = readExifTags(input);
  return pyJsonObject([...tags].map(([k, v]) => [k, stripChars(v, PY_WHITESPACE)] as [string, string]));
}
